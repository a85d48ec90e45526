"""A model kind that lives only in the test tree: its package and one `register(KIND)` line are all
fakefinder needs to train, evaluate, predict and serve it. It fits y = a*x + b to a CSV of numbers."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from fakefinder.config import Config, ConfigError
from fakefinder.tasks.base import Kind
from toy_regressor.config import ToyConfig


class ToyRegressor(Kind):
    name: ClassVar[str] = "toy_regressor"
    description: ClassVar[str] = "a straight line fitted to numbers (a kind for tests)"
    dataset_layout: ClassVar[str] = "a toy_train.csv of x, y numbers"
    section: ClassVar[str] = "toy"
    section_model = ToyConfig
    defaults: ClassVar[dict] = {"toy": {"train": {"epochs": 3}}}
    short_form: ClassVar[dict[str, str]] = {
        "dataset_path": "toy.data",
        "epochs": "toy.train.epochs",
        "learning_rate": "toy.train.lr",
    }
    option_sections: ClassVar[tuple[str, ...]] = ("toy.train", "toy")
    run_section: ClassVar[str] = "toy.train"
    predict_inputs: ClassVar[tuple[str, ...]] = (".csv",)

    def train(self, config: Config, resume=False, events=None, overwrite: bool = False):
        from toy_regressor.train import train

        return train(config, resume, events, overwrite)

    def evaluate(self, config: Config, models: list[Path], events=None):
        from toy_regressor.evaluate import evaluate

        return evaluate(config, models, events)

    def load(self, artifacts: list, device="cpu", config: Config | None = None):
        from toy_regressor.predict import LinePredictor

        return LinePredictor(self.one_artifact(artifacts))

    def dataset_settings(self, path: Path) -> dict:
        if not (Path(path) / "toy_train.csv").is_file():
            raise ConfigError(f"{path} holds no toy_train.csv")
        return {"toy.data": str(path)}

    def describe_dataset(self, path: Path) -> dict | None:
        from toy_regressor.data import describe

        return describe(Path(path))


KIND = ToyRegressor()
