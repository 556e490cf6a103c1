"""Test support for the Raft core: a data-driven file runner and an interaction environment.

After etcd-io/raft's ``rafttest`` package and cockroachdb's ``datadriven``:
scripts under ``tests/raft/testdata`` drive a small cluster of
:class:`~consensus.raft.rawnode.RawNode` members step by step and compare
the textual trace with the expected output recorded in the file.
"""
