"""The state machine's snapshot refuses damage in any section, not only in the key space."""

from __future__ import annotations

import pytest

from consensus.server.etcd_state import EtcdStateMachine


def test_a_flipped_byte_anywhere_in_the_state_snapshot_is_refused() -> None:
    data = EtcdStateMachine().snapshot()
    EtcdStateMachine().restore(data, 1)  # intact: restores
    for i in range(len(data)):
        damaged = bytearray(data)
        damaged[i] ^= 0x55
        with pytest.raises(ValueError):
            EtcdStateMachine().restore(bytes(damaged), 1)
