"""Fused multi-step LIF/IF spiking neuron: the TIR kernel, its numpy reference, and the ONNX
rewrite that replaces each unrolled neuron the graph finds by one hwlat.LIFNeuron node."""

from hwlat.kernels.spiking.kernel import neuron_primfunc
from hwlat.kernels.spiking.neuron import CHARGES, FIRES, RESETS, NeuronSpec
from hwlat.kernels.spiking.reference import neuron_reference

__all__ = ["CHARGES", "FIRES", "RESETS", "NeuronSpec", "neuron_primfunc", "neuron_reference"]
