"""The control plane of a node: ``roost ctl``, ``roost shell`` and hot reload.

Pieces, from the wire inwards:

* :mod:`~roost.admin.protocol` - newline-delimited JSON requests and responses, error codes
  and the exit codes ``roost ctl`` turns them into;
* :mod:`~roost.admin.channel` - the node's unix socket in the data directory (0600, peer
  credentials checked, one node per data directory), served on the node's event loop, with
  the audit log;
* :mod:`~roost.admin.remote` - the same protocol over mutual TLS for administrators on other
  machines (``admin.listen``, off by default; no shell there);
* :mod:`~roost.admin.commands` - the one registry of admin commands (declarative arguments,
  a handler that gets the node and returns JSON), used by ``roost ctl``, by the shell's
  ``ctl`` namespace, by cluster-wide aggregation and, later, by an HTTP API; the commands
  themselves are in :mod:`~roost.admin.builtin`, :mod:`~roost.admin.config_commands` and
  :mod:`~roost.admin.cluster_commands` (``nodes``, ``groups``);
* :mod:`~roost.admin.fanout` - ``--node NAME`` and ``--all``: the same handlers run on other
  nodes over the mesh, results aggregated by node, per-node timeouts;
  :mod:`~roost.admin.config_sync` - a node that missed a cluster-wide ``config set`` takes
  it when it links again;
* :mod:`~roost.admin.shell` - evaluation of Python inside the node (top-level ``await``,
  output capture, timeout, cancellation), for ``roost shell`` and ``RunningServer.eval``;
* :mod:`~roost.admin.reload` - building a candidate configuration from the node's inputs and
  applying its runtime part all-or-nothing (SIGHUP, ``config reload``, ``config set``);
* :mod:`~roost.admin.monitor` - event-loop lag, message rates and memory for ``status``;
* :mod:`~roost.admin.client` - the client side, blocking for the CLI and asyncio for code;
* :mod:`~roost.admin.render` - human-readable tables for the CLI.

The command-line front ends are :mod:`roost.cli.ctl` and :mod:`roost.cli.shell`.
"""
