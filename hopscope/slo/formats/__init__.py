"""One module per SLO file format, each parsing its documents into :mod:`hopscope.slo.model`."""
