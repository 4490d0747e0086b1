"""Another team's Serve application on the same cluster (not ours): the tests deploy it
first and check that our declarative PUTs leave it running."""

from ray import serve


@serve.deployment(ray_actor_options={"num_cpus": 0})
class Hello:
    async def __call__(self, request) -> str:
        return "hello from another app"


app = Hello.bind()
