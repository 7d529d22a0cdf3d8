"""The single pass of predict-then-learn makes river's predictions and learns river's model."""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import pytest
from river import anomaly, compose, feature_extraction, linear_model, preprocessing, stats

from streamwise_core.contracts.appspec import Task, load_app_spec, parse_app_spec
from streamwise_core.contracts.codec import dumps
from streamwise_core.contracts.schema import to_model_input
from streamwise_core.domain.inference import predict
from streamwise_core.domain.pipeline import SelectPresent, build_model
from streamwise_core.domain.progressive import PredictThenLearn
from streamwise_devstack.fraud import FraudStream
from streamwise_trainer.learner import OnlineLearner, embedding_model

ROOT = Path(__file__).resolve().parents[2]
SPEC = load_app_spec(ROOT / "examples" / "fraud" / "streamwise.toml")
FRAUD_STEPS = {
    "linear": [{"use": "linear_model.LogisticRegression", "params": {"optimizer": {"use": "optim.SGD", "args": [0.05]}}}],
    "hoeffding": [{"use": "tree.HoeffdingTreeClassifier", "params": {"grace_period": 50}}],
    "arf": [{"use": "forest.ARFClassifier", "params": {"n_models": 3, "seed": 1}}],
}


def fraud_app(steps: list[dict[str, Any]]) -> Any:
    data = SPEC.model_dump(mode="json")
    data["model"] = {"name": "m", "preprocess": "auto", "steps": steps}
    return parse_app_spec(data)


def fraud_examples(n: int) -> list[tuple[dict[str, Any], Any]]:
    return [(to_model_input(SPEC, e.features), e.label) for e in FraudStream(seed=11, drift_at=n // 2).take(n)]


def growing_categories(n: int) -> list[tuple[dict[str, Any], float]]:
    """Numbers and a category whose values keep arriving: the one-hot encoder learns mid-stream."""
    rng = random.Random(5)
    out = []
    for i in range(n):
        x: dict[str, Any] = {"a": rng.gauss(0, 1), "b": rng.uniform(-3, 3), "c": f"v{rng.randrange(1 + i // 40)}"}
        if i % 7 == 0:
            del x["b"]  # an absent optional feature
        out.append((x, 2.0 * x["a"] - x.get("b", 0.0) + (1.0 if x["c"] == "v0" else 0.0)))
    return out


def river_calls(model: Any, task: Task, examples: list[tuple[dict[str, Any], Any]]) -> list[Any]:
    out = []
    for x, y in examples:
        out.append(predict(model, task, x))
        model.learn_one(x, y)
    return out


def single_pass(model: Any, task: Task, examples: list[tuple[dict[str, Any], Any]]) -> tuple[PredictThenLearn, list[Any]]:
    step = PredictThenLearn(model, task)
    return step, [step(x, y) for x, y in examples]


def identical(a: Any, b: Any) -> bool:
    """Equal to the last bit, NaN included (a scaler's first output can be 0/0)."""
    return pickle.dumps(a) == pickle.dumps(b)


def assert_same_model(a: Any, b: Any, task: Task, probes: list[dict[str, Any]]) -> None:
    """Same answers on inputs neither has seen, and the same learned state of every step."""
    assert identical([predict(a, task, x) for x in probes], [predict(b, task, x) for x in probes])
    if isinstance(a, compose.Pipeline):
        for name, step in a.steps.items():
            assert dumps(step) == dumps(b.steps[name]), name


@pytest.mark.parametrize("kind", sorted(FRAUD_STEPS))
def test_the_bench_pipelines_predict_and_learn_as_river_does(kind: str) -> None:
    app = fraud_app(FRAUD_STEPS[kind])
    examples = fraud_examples(1500 if kind == "arf" else 4000)
    expected = river_calls(river_model := build_model(app), app.task, examples)
    step, got = single_pass(ours := build_model(app), app.task, examples)
    assert step.fused is not None
    assert identical(got, expected)
    assert_same_model(ours, river_model, app.task, [x for x, _ in fraud_examples(300)])


def with_square(x: dict[str, Any]) -> dict[str, Any]:
    return {**x, "a2": x["a"] ** 2}


def regression_pipelines() -> dict[str, Any]:
    return {
        "select, scale": lambda: SelectPresent("a", "b") | preprocessing.StandardScaler() | linear_model.LinearRegression(),
        "union with a one-hot encoder learning new values": lambda: (
            (SelectPresent("a", "b") | preprocessing.StandardScaler()) + (SelectPresent("c") | preprocessing.OneHotEncoder())
        ) | linear_model.LinearRegression(),
        "a union whose parts share a key (the first part's wins)": lambda: (
            (compose.Select("a") | preprocessing.StandardScaler()) + SelectPresent("a", "b")
        ) | linear_model.LinearRegression(),
        "a supervised transformer": lambda: compose.Select("a", "c")
        | feature_extraction.TargetAgg(by="c", how=stats.Mean()) | preprocessing.StandardScaler()
        | linear_model.LinearRegression(),
        "a function transformer": lambda: compose.FuncTransformer(with_square)
        | compose.Discard("c") | preprocessing.MinMaxScaler() | linear_model.LinearRegression(),
    }


@pytest.mark.parametrize("name", sorted(regression_pipelines()))
def test_transformers_learn_and_transform_in_river_s_order(name: str) -> None:
    make = regression_pipelines()[name]
    examples = growing_categories(2000)
    expected = river_calls(river_model := make(), Task.REGRESSION, examples)
    step, got = single_pass(ours := make(), Task.REGRESSION, examples)
    assert step.fused is not None
    assert identical(got, expected)
    assert_same_model(ours, river_model, Task.REGRESSION, [x for x, _ in growing_categories(200)])


def test_what_it_cannot_walk_is_left_to_river_s_two_calls() -> None:
    numbers = [({"a": x["a"], "b": x.get("b", 0.0)}, y) for x, y in growing_categories(600)]
    cases = {
        "not a pipeline": lambda: linear_model.LinearRegression(),
        "a supervised part of a union": lambda: (
            feature_extraction.TargetAgg(by="c", how=stats.Mean()) + compose.Select("a")
        ) | linear_model.LinearRegression(),
        "an anomaly filter": lambda: compose.Select("a", "b") | anomaly.QuantileFilter(
            anomaly.HalfSpaceTrees(seed=1), q=0.95,
        ) | linear_model.LinearRegression(),
    }
    for name, make in cases.items():
        examples = growing_categories(600) if name == "a supervised part of a union" else numbers
        expected = river_calls(make(), Task.REGRESSION, examples)
        step, got = single_pass(make(), Task.REGRESSION, examples)
        assert step.fused is None, name
        assert identical(got, expected), name


def test_learning_during_prediction_takes_river_s_calls() -> None:
    examples = growing_categories(500)
    make = regression_pipelines()["select, scale"]
    with compose.learn_during_predict():
        expected = river_calls(make(), Task.REGRESSION, examples)
        step, got = single_pass(make(), Task.REGRESSION, examples)
    assert step.fused is not None
    assert identical(got, expected)


def test_the_learner_follows_its_model_and_pickles_without_the_pass() -> None:
    app = fraud_app(FRAUD_STEPS["linear"])
    examples = fraud_examples(400)
    learner = OnlineLearner(build_model(app), app.task, app)
    for x, y in examples[:200]:
        learner.predict_then_learn(x, y)
    first = learner._step
    assert first is not None and first.model is learner.model
    learner.reset()  # a new model: the pass must follow it, not keep learning the old one
    outcomes = [learner.predict_then_learn(x, y) for x, y in examples[200:]]
    assert learner._step is not first and learner._step.model is learner.model
    assert [(o.y_pred, o.proba) for o in outcomes] == river_calls(build_model(app), app.task, examples[200:])
    restored = pickle.loads(pickle.dumps(learner))
    assert "_step" not in vars(restored)
    blob = pickle.dumps(learner.model)
    rebuilt = pickle.loads(dumps(learner, embedding_model(blob)))  # as a checkpoint pickles it
    assert "_step" not in vars(rebuilt)
    more = examples[:50]
    assert [restored.predict_then_learn(x, y) for x, y in more] == [rebuilt.predict_then_learn(x, y) for x, y in more]
