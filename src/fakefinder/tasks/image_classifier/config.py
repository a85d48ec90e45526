"""The `classifier` config section: where the image classifier's class folders are."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from fakefinder.config import Section


class ClassifierConfig(Section):
    data_dir: Path | None = Field(
        default=None,
        description="dataset/{train,val[,test]}/<class>/*.jpg: one folder per class (its name is the class "
        "name), the test folder optional.",
    )
    check_images: bool = Field(
        default=True,
        description="Open every image's header before training; unreadable ones are listed in failures.csv "
        "and left out.",
    )
