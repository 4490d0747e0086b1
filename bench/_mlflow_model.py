"""Save the bench's scikit-learn pipeline as an MLflow model (runs in .venv-bench)."""

import sys
import warnings

warnings.filterwarnings("ignore")
import joblib  # noqa: E402
import mlflow.sklearn  # noqa: E402
import pandas as pd  # noqa: E402

model = joblib.load(sys.argv[1])
example = pd.read_json(sys.argv[3], orient="split")
mlflow.sklearn.save_model(
    model,
    sys.argv[2],
    input_example=example,
    serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_CLOUDPICKLE,
)
print("saved")
