"""fleet.toml: what it accepts, what it refuses (and says why), and edits that touch only
their own lines."""

from pathlib import Path

import pytest

from mlops_console.errors import MlopsError
from mlops_edge_ssh import inventory
from mlops_edge_ssh.rollout import parse_fraction, parse_waves

BASE = """\
# the plant's gateways
[defaults]
user = "root"
key = "keys/fleet"
known_hosts = "fleet_known_hosts"

[group.plant-a]
pin = "churn/3"

[[device]]
name = "gw-01"   # by the door
host = "10.210.1.2"
groups = ["plant-a"]

[[device]]
name = "gw-02"
host = "10.210.1.3"
port = 2222
root = "/srv/edge"
tags = { line = "3" }
"""


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "fleet.toml").write_text(text)
    return tmp_path


def test_defaults_groups_pins_and_tags(tmp_path):
    fl = inventory.load(write(tmp_path, BASE))
    a, b = fl.devices
    assert a.key == tmp_path / "keys/fleet" and a.known_hosts == tmp_path / "fleet_known_hosts"
    assert a.effective_pin == "churn/3" and b.effective_pin is None
    assert b.port == 2222 and b.root == "/srv/edge" and a.root == "/opt/mlops-edge"
    assert [d.name for d in fl.select("plant-a")] == ["gw-01"]
    assert [d.name for d in fl.select("line=3")] == ["gw-02"]
    with pytest.raises(MlopsError, match="No device is in group"):
        fl.select("nowhere")


@pytest.mark.parametrize(
    "change, says",
    [
        (('name = "gw-02"', 'name = "../x"'), "Device name '../x' is not allowed"),
        (("port = 2222", "port = 99999"), "port must be a whole number"),
        (('root = "/srv/edge"', 'root = "srv"'), "root must be an absolute path"),
        (('pin = "churn/3"', 'pin = "churn@champion"'), "must name a version"),
        (('host = "10.210.1.3"', 'host = "10.210.1.3"\ncolour = "red"'), "unknown key"),
        (('known_hosts = "fleet_known_hosts"\n', ""), "host keys are always verified"),
        (('name = "gw-02"', 'name = "gw-01"'), "listed twice"),
        (('name = "gw-02"', 'name = "gw--02"'), "no '--'"),
        (("[[device]]", "[[device]"), "not valid TOML"),
        (("[[device]]", "[gate]\nrequets = 5\n[[device]]"), "gate settings requets are not known"),
        (("port = 2222", 'port = 2222\nknown_host = "garbage"'), "is not a host key line"),
        (("port = 2222", 'port = 2222\nknown_host = "ssh-ed25519 !!"'), "is not a host key line"),
        (  # a host name before the key, or a key of another type than it says
            ("port = 2222", 'port = 2222\nknown_host = "gw-02 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5"'),
            "is not a host key line",
        ),
        (
            ("port = 2222", 'port = 2222\nknown_host = "ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIOo2"'),
            "is not a host key line",
        ),
    ],
)
def test_bad_inventories_are_refused_with_what_to_do(tmp_path, change, says):
    write(tmp_path, BASE.replace(*change, 1))
    with pytest.raises(MlopsError, match=says.replace("(", r"\(").replace(".", r"\.")):
        inventory.load(tmp_path)


def test_edits_touch_only_their_lines_and_never_write_an_invalid_file(tmp_path):
    write(tmp_path, BASE)
    inventory.add_device(tmp_path, "gw-03", "10.210.1.4", groups=["plant-b"], port=22)
    inventory.set_key(tmp_path, "device", "gw-02", "pin", "churn/2")
    inventory.set_key(tmp_path, "group", "plant-a", "pin", None)
    inventory.set_key(tmp_path, "device", "gw-01", "hold", True)
    text = (tmp_path / "fleet.toml").read_text()
    assert "# the plant's gateways" in text and "# by the door" in text
    fl = inventory.load(tmp_path)
    assert [d.name for d in fl.devices] == ["gw-01", "gw-02", "gw-03"]
    assert fl.device("gw-02").pin == "churn/2" and fl.device("gw-01").effective_pin is None
    assert fl.device("gw-01").held and fl.device("gw-03").groups == ("plant-b",)
    inventory.remove_device(tmp_path, "gw-02")
    assert [d.name for d in inventory.load(tmp_path).devices] == ["gw-01", "gw-03"]
    before = (tmp_path / "fleet.toml").read_text()
    with pytest.raises(MlopsError):
        inventory.add_device(tmp_path, "gw-04", "10.0.0.9", port=0)  # invalid: not written
    with pytest.raises(MlopsError, match="already in"):
        inventory.add_device(tmp_path, "gw-01", "10.0.0.9")
    with pytest.raises(MlopsError, match="No device is in group 'plant-z'; groups: plant-a"):
        inventory.set_key(tmp_path, "group", "plant-z", "pin", "churn/2")  # a typo
    assert (tmp_path / "fleet.toml").read_text() == before


def test_waves_are_cumulative_and_reach_everyone():
    assert parse_waves("1,10%,50%,100%", 20) == [1, 2, 10, 20]
    assert parse_waves("1,50%,100%", 10) == [1, 5, 10]
    assert parse_waves("1,4,15", 20) == [1, 5, 20]
    assert parse_waves("1,4", 20) == [1, 5, 20]
    assert parse_waves("100%", 3) == [3]
    assert parse_waves("5,1", 3) == [3]
    with pytest.raises(MlopsError, match="not a count or a percentage"):
        parse_waves("half", 4)
    assert parse_fraction("10%", "x") == pytest.approx(0.1)
    with pytest.raises(MlopsError, match="between 0% and 100%"):
        parse_fraction("150%", "--max-failed")


def test_a_valid_known_host_loads_and_an_emptied_group_table_goes(tmp_path):
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOo2ZbX3c8qC3r6kP3q0b8cL7o1Ykq9sX0mJtA0d8F2T"
    write(tmp_path, BASE.replace("port = 2222", f'port = 2222\nknown_host = "{key} gw-02"'))
    assert inventory.load(tmp_path).device("gw-02").known_host == f"{key} gw-02"
    inventory.set_key(tmp_path, "group", "plant-a", "pin", None)
    text = (tmp_path / "fleet.toml").read_text()
    assert "[group.plant-a]" not in text and "\n\n\n" not in text
    assert inventory.load(tmp_path).device("gw-01").groups == ("plant-a",)
    with pytest.raises(MlopsError, match="No device is in group 'plant-zz'"):
        inventory.set_key(tmp_path, "group", "plant-zz", "pin", None)
