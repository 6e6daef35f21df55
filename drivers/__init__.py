"""The drivers that ship with edgert, each found through the `edgert.drivers` entry points."""
