"""Analytic devices: latency (and energy) from a model of the hardware instead of a measurement:
the roofline model (`roofline`) and a spiking neuromorphic chip (`neuromorphic`)."""
