"""The `gpio` driver's config keys (DESIGN.md section 3), decoded and checked.

A `[[driver]]` with `type = "gpio"` names a `chip` (a character device such as
"/dev/gpiochip0", or "sim:NAME" for a simulated chip) and its lines as
`[[driver.line]]` tables. Every mistake names its key: a duplicate line name or
offset, `initial`/`on_stop` on an input, `edge`/`debounce` on an output, a
direction, edge or bias that does not exist.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Literal

from edgert.config import Invalid
from edgert.point import valid_name

__all__ = ["GpioConfig", "Line"]

Direction = Literal["input", "output"]
Edge = Literal["none", "rising", "falling", "both"]
Bias = Literal["as_is", "disabled", "pull_up", "pull_down"]
OnStop = Literal["keep", "initial"]


@dataclass
class Line:
    """One `[[driver.line]]`: a GPIO line, published as points of type `name`."""

    name: str = field(metadata={"name": True})
    offset: int = field(metadata={"min": 0})
    direction: Direction = "input"
    edge: Edge | None = None  # inputs: "both" when not given
    bias: Bias = "as_is"
    active_low: bool = False
    debounce: float | None = field(default=None, metadata={"min": 0, "max": 10.0})  # seconds
    initial: bool | None = None  # outputs: False when not given
    on_stop: OnStop | None = None  # outputs: "keep" when not given

    def check(self) -> None:
        if self.direction == "input":
            if self.initial is not None:
                raise Invalid("initial", f"line {self.name!r} is an input; only outputs have one")
            if self.on_stop is not None:
                raise Invalid("on_stop", f"line {self.name!r} is an input; only outputs have one")
        else:
            if self.edge is not None:
                raise Invalid("edge", f"line {self.name!r} is an output; only inputs have edges")
            if self.debounce is not None:
                raise Invalid(
                    "debounce", f"line {self.name!r} is an output; only inputs are debounced"
                )

    @property
    def is_input(self) -> bool:
        return self.direction == "input"

    @property
    def edges(self) -> Edge:
        """The edges that produce events: `edge`, or its default."""
        if not self.is_input:
            return "none"
        return self.edge or "both"

    @property
    def debounce_s(self) -> float:
        return self.debounce or 0.0

    @property
    def initial_value(self) -> bool:
        return bool(self.initial)

    @property
    def restore_on_stop(self) -> bool:
        return self.on_stop == "initial"


@dataclass
class GpioConfig:
    chip: str
    line: list[Line] = field(default_factory=list)
    poll_interval: float = field(default=1.0, metadata={"gt": 0})  # for edge = "none" inputs
    consumer: str | None = None  # the label the kernel shows for the lines; default edgert-NAME

    def check(self) -> None:
        if not self.chip:
            raise Invalid("chip", 'must name a GPIO chip, e.g. "/dev/gpiochip0" or "sim:NAME"')
        if not self.chip.startswith("sim:") and importlib.util.find_spec("gpiod") is None:
            raise Invalid(
                "chip",
                f"{self.chip!r} is a real chip, which needs the gpiod package"
                " (pip install 'edgert[gpio]'); simulated chips are \"sim:NAME\"",
            )
        if self.chip.startswith("sim:"):
            name = self.chip[4:]
            if not (valid_name(name) or name.startswith("/")):
                raise Invalid(
                    "chip",
                    f"{self.chip!r}: a simulated chip is sim:NAME (letters, digits, '_', '-')"
                    " or sim:/absolute/directory",
                )
        if not self.line:
            raise Invalid("line", "a gpio driver needs at least one [[driver.line]]")
        names: dict[str, int] = {}
        offsets: dict[int, str] = {}
        for i, ln in enumerate(self.line):
            if ln.name in names:
                raise Invalid(
                    "line.name",
                    f"lines #{names[ln.name] + 1} and #{i + 1} are both named {ln.name!r}",
                )
            names[ln.name] = i
            if ln.offset in offsets:
                raise Invalid(
                    "line.offset",
                    f"lines {offsets[ln.offset]!r} and {ln.name!r} both use offset {ln.offset}",
                )
            offsets[ln.offset] = ln.name
