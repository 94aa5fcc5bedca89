"""Running roost as a cluster of nodes.

* The mesh (``roost.cluster.mesh``, with ``framing``, ``mesh_link``, ``mesh_tls`` and ``ca``):
  an authenticated TLS link between every pair of nodes, carrying typed messages on channels.
* Process groups (``roost.cluster.pg``, after Erlang/OTP's ``pg``): members join named groups,
  and every node reads the members of a group, its own and its linked peers', from memory. A
  Sans-I/O protocol core; ``roost.cluster.pg_sim`` runs it on a simulated network for tests.

Nothing is imported here, so that importing one part does not load the others.
"""
