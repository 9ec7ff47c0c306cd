"""Requests on the wire: V2/V1 tensors and parameters, the search protocol, metadata filters."""
