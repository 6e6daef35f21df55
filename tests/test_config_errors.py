"""A config with several mistakes gets them all at once, typos with a "did you mean"."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from edgert.cli import cli
from edgert.config import ConfigError, loads

MANY = """
[gateway]
id = "gw"
[supervisr]
intensity = 3
[nats]
embeded = true
[[driver]]
name = "gen"
typ = "sim"
[[driver]]
name = "gen2"
type = "sim"
restrat = "permanent"
[[driver.signal]]
name = "t"
rat = 5.0
[[driver.signal]]
name = "u"
rate = -1.0
"""


def test_every_problem_of_a_file_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as e:
        loads(MANY, "gw.toml")
    problems = e.value.problems
    assert len(problems) == 6, problems
    expected = [
        "unknown table or key 'supervisr' (did you mean 'supervisor'?)",
        "[nats]: unknown key 'embeded' (did you mean 'embedded'?)",
        "[[driver]] 'gen': missing required key 'type'",
        "[[driver]] 'gen2': unknown key 'restrat' (did you mean 'restart'?)",
        "signal[0]: unknown key 'rat' (did you mean 'rate'?)",
        "signal[1]: key 'rate' must be > 0, got -1.0",
    ]
    for want, got in zip(expected, problems, strict=True):
        assert want in got and got.startswith("gw.toml: "), (want, got)
    assert "'typ' is there: did you mean 'type'?" in problems[2]


def test_check_prints_each_problem_on_its_own_line(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text(MANY)
    r = CliRunner().invoke(cli, ["check", str(cfg)])
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()  # stderr: nothing goes to stdout
    assert len(lines) == 6 and all(x.startswith(f"edgert: error: {cfg}: ") for x in lines)


def test_a_missing_required_key_names_the_near_miss_that_is_there() -> None:
    body = (
        '[gateway]\nid = "gw"\n[[driver]]\nname = "g"\ntype = "sim"\n[[driver.signal]]\nnme = "t"\n'
    )
    with pytest.raises(ConfigError) as e:
        loads(body, "gw.toml")
    text = str(e.value)
    assert "unknown key 'nme' (did you mean 'name'?)" in text
    assert "missing required key 'name' ('nme' is there: a typo?)" in text


def test_no_suggestion_for_a_key_like_no_other() -> None:
    with pytest.raises(ConfigError) as e:
        loads('[gateway]\nid = "gw"\n[nats]\nzzqx = 1\n', "gw.toml")
    (only,) = e.value.problems
    assert "unknown key 'zzqx'" in only and "did you mean" not in only


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("0", "key 'ack_timeout' must be > 0, got 0.0"),
        ("-1", "key 'ack_timeout' must be > 0, got -1.0"),
        ("nan", "key 'ack_timeout' must be > 0, got nan"),
        ('"5s"', "key 'ack_timeout' must be a number, got string '5s'"),
        ("true", "key 'ack_timeout' must be a number, got boolean True"),
        ("inf", "key 'ack_timeout' must be <= 600.0, got inf"),
        ("3600", "key 'ack_timeout' must be <= 600.0, got 3600.0"),
        ("0.01", "key 'ack_timeout': must be at least 0.1 s, got 0.01"),
    ],
)
def test_nats_ack_timeout_out_of_its_range_is_refused(value: str, error: str) -> None:
    with pytest.raises(ConfigError) as e:
        loads(f'[gateway]\nid = "gw"\n[nats]\nack_timeout = {value}\n', "gw.toml")
    (only,) = e.value.problems
    assert only.startswith("gw.toml: [nats]: ") and error in only, only


def test_nats_ack_timeout_defaults_to_5_seconds_and_takes_an_integer() -> None:
    assert loads('[gateway]\nid = "gw"\n', "gw.toml").nats.ack_timeout == 5.0
    cfg = loads('[gateway]\nid = "gw"\n[nats]\nack_timeout = 2\n', "gw.toml")
    assert cfg.nats.ack_timeout == 2.0 and isinstance(cfg.nats.ack_timeout, float)
