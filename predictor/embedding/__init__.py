"""The embedding network: model packages, architectures, backbone, precision, compilation, probe, projection."""
