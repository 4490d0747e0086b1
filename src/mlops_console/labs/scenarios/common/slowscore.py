"""The latency scenario's "improved" model: a logistic regression that scores as well as
the first one but spends 80 ms on every call (think of a feature lookup added in a
hurry). Carried in the model bundle like any workspace code."""

import time

from sklearn.linear_model import LogisticRegression

DELAY_SECONDS = 0.08


class SlowScore(LogisticRegression):
    def predict_proba(self, X):
        time.sleep(DELAY_SECONDS)
        return super().predict_proba(X)

    def predict(self, X):
        time.sleep(DELAY_SECONDS)
        return super().predict(X)


def build(**params):
    return SlowScore(**params)
