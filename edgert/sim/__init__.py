"""Simulated hardware for hardware-in-the-loop tests, demos and benchmarks.

`modbus` serves simulated Modbus devices on a pseudo-terminal or TCP (the
`edgert sim modbus` command), `peer` runs pymodbus as an independent server
for tests, `harness` runs a driver in-process with its output captured, and
`fixtures` offers all of them to pytest.
"""
