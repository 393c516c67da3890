"""A/B experiments of programs (issue #22): variants with weights, a deterministic sticky
assignment of advocates, the lifecycle and its events, and a significance readout."""
