"""The lab: this machine acts as Infra02 and runs the real `email` LXC container.

`./lab/up` and `./lab/down` (or `python -m lab up|down`) build and tear it down; see
`lab/__main__.py` for the phases and docs/architecture.md ("Lab contract") for `.lab/lab.json`.
"""
