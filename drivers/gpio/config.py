"""The `gpio` driver's config keys (docs/design.md, section 3), decoded and checked.

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

    name: str = field(
        metadata={"name": True, "doc": "the points' type (their node is the driver's name)"}
    )
    offset: int = field(metadata={"min": 0, "doc": "the line's offset on the chip"})
    direction: Direction = field(
        default="input", metadata={"doc": "outputs take commands (true/false or 0/1)"}
    )
    edge: Edge | None = field(
        default=None,
        metadata={
            "doc": 'inputs: the edges published; "none" reads every poll_interval ("both" when unset)'
        },
    )
    bias: Bias = field(default="as_is", metadata={"doc": "the line's pull resistor"})
    active_low: bool = field(default=False, metadata={"doc": "true: a low level reads as true"})
    debounce: float | None = field(
        default=None,
        metadata={
            "min": 0,
            "max": 10.0,
            "doc": "inputs: seconds a new level must hold before it counts",
        },
    )
    initial: bool | None = field(
        default=None, metadata={"doc": "outputs: the value set at start (false when unset)"}
    )
    on_stop: OnStop | None = field(
        default=None,
        metadata={
            "doc": 'outputs: "initial" sets the output back to initial when the driver stops ("keep" when unset)'
        },
    )

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
    chip: str = field(
        metadata={"doc": 'a chip device, "/dev/gpiochip0", or "sim:NAME" for a simulated chip'}
    )
    line: list[Line] = field(
        default_factory=list, metadata={"doc": "the lines to use, one table each"}
    )
    poll_interval: float = field(
        default=1.0, metadata={"gt": 0, "doc": 'seconds between reads of edge = "none" inputs'}
    )
    consumer: str | None = field(
        default=None,
        metadata={"doc": "the label the kernel shows on the lines (edgert-NAME when unset)"},
    )

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
