"""The suite file's schema: a suite, its rows, profiles and claims, and one resolved run (`RunSpec`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from harness.targets import REPRODUCES
from shapeprop.config import ExperimentConfig, SplitFiles

YamlPath = tuple[Any, ...]


class SuiteError(ValueError):
    """A suite file that cannot be used; the message names file, line, key path and problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetMapping(_Strict):
    """A real dataset's stand-in in a profile, with overrides that apply only where it is used.

    They are applied after the profile's overrides, so they win over them.
    """

    dataset: str
    overrides: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, value: Any) -> Any:
        # `synthetic: synthetic` is short for `synthetic: {dataset: synthetic}`. A validator, not a
        # `str | DatasetMapping` union: pydantic would report a misspelt key under both members.
        return {"dataset": value} if isinstance(value, str) else value


class DatasetFiles(_Strict):
    """A COCO-format dataset of one's own, named by its key in the suite's `datasets:` section and
    used as `data.dataset: <that name>`; its paths are relative to the suite file. Expansion writes
    them into each run's `data.files` / `data.class_groups`, so a run needs nothing but its config."""

    files: dict[str, SplitFiles] = Field(
        min_length=1,
        description="per split name (train, val, ...): annotations (a COCO JSON) and images (a folder)",
    )
    class_groups: dict[str, list[str]] | None = Field(
        None,
        description="named groups of its classes (e.g. seen / unseen) for masks.classes and eval.categories",
    )


class Profile(_Strict):
    """How a profile changes every run: datasets mapped to stand-ins, then dotted overrides, then
    the overrides of the rows matched by `rows`.

    Profile overrides never switch on a section that is null in a run (e.g. `model.shapeprop.*`
    leaves runs without ShapeProp unchanged), so one profile can shrink every method.
    """

    include: str | None = Field(
        None,
        description="a shared profile file (path relative to the suite) merged under this one; "
        "this profile's own datasets, overrides, rows and seeds win (harness.suite.include)",
    )
    datasets: dict[str, DatasetMapping] = Field(default_factory=dict)
    overrides: dict[str, Any] = Field(default_factory=dict)
    seeds: list[int] | None = Field(
        None, min_length=1, description="replaces the suite's seed axis under this profile"
    )
    rows: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="overrides for the rows whose label matches the key (a label, or a glob with * ? "
        "[), applied after the profile's and the stand-ins': a row's own schedule at this scale",
    )


class Row(_Strict):
    label: str = Field(min_length=1)
    method: str | None = None
    overrides: dict[str, Any] = Field(default_factory=dict)


class ClaimMetric(_Strict):
    """The metric compared on each side, when it is not mask AP, IoU@GT and box AP.

    A logged metric's name (e.g. `segm_AP50`), or `<file>.csv:<column>`: 100 x the mean of that
    column of the run's CSV artifact (e.g. `best_overlap.csv:shape_iou`, IoUs in percent like the
    logged metrics). Two metrics of one row compare two measurements of the same runs.
    """

    ours: str = Field(min_length=1)
    baseline: str = Field(min_length=1)


class Claim(_Strict):
    """A comparison the paper makes: the runs of row `ours` against those of row `baseline`, paired
    by seed (and by the value of config key `by`). It changes no run: `report --claims` reads it."""

    claim: str = Field(min_length=1, description="the paper's claim, e.g. 'Table 4: + ShapeProp'")
    ours: str = Field(min_length=1, description="a row label")
    baseline: str = Field(min_length=1, description="a row label (the same as `ours` with `metric`)")
    direction: Literal["higher", "lower", "none"] = Field(
        description="what the paper says ours is: higher, lower, or no different (then give `margin`)"
    )
    paper: float | None = Field(
        None, description="the paper's difference ours - baseline in mask AP (or `metric`), if it gives one"
    )
    margin: float | None = Field(
        None,
        gt=0,
        description="with direction 'none': the equivalence margin, in points of each metric; the "
        "claim holds when the difference is shown to lie within +-margin (two one-sided tests)",
    )
    family: str | None = Field(
        None,
        description="the claims adjusted together for multiplicity, per metric (default: all the "
        "suite's claims); name a family to adjust a group of them on its own",
    )
    by: str | None = Field(None, description="a config key: one paired comparison per value")
    metric: ClaimMetric | None = None


class Suite(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    reproduces: Literal[REPRODUCES] | None = None  # type: ignore[valid-type]
    plugins: list[str] = Field(
        default_factory=list,
        description="Python modules imported before the suite is read, which register datasets, methods, "
        "detectors or backbones (harness.plugins); a module path relative to the suite file works too",
    )
    datasets: dict[str, DatasetFiles] = Field(
        default_factory=dict, description="COCO-format datasets of your own, by name"
    )
    base: dict[str, Any] = Field(default_factory=dict)
    rows: list[Row] = Field(default_factory=list)
    axes: dict[str, list[Any]] = Field(default_factory=dict)
    profiles: dict[str, Profile] = Field(default_factory=dict)
    claims: list[Claim] = Field(default_factory=list)

    # Where the suite came from (set by `parse_suite`, not part of the YAML).
    _source: str = PrivateAttr("<string>")
    _positions: dict[YamlPath, tuple[int, int]] = PrivateAttr(default_factory=dict)

    @property
    def source(self) -> str:
        """The file the suite was read from."""
        return self._source

    @property
    def positions(self) -> dict[YamlPath, tuple[int, int]]:
        """(line, column) of every key and list item of the file, by key path."""
        return self._positions

    def profile_names(self) -> list[str]:
        """`full` always exists (the base as written); other profiles only when the file has them."""
        return ["full"] + [p for p in self.profiles if p != "full"]


@dataclass(frozen=True)
class RunSpec:
    """One fully resolved run of a suite."""

    suite: str
    reproduces: str | None
    row: str
    method: str
    profile: str
    seed: int
    config: ExperimentConfig
    key: str
    axes: dict[str, Any] = field(default_factory=dict)  # this run's axis values (dotted key -> value)

    def describe(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.axes.items() if k not in ("seed", "method"))
        return f"{self.row} [{self.method}, seed {self.seed}{', ' + extra if extra else ''}]"
