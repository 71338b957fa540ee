#!/usr/bin/env python3
"""Writes the malformed-frame corpus used by tests/transport/agent_malformed_test.cpp.

Each file is the raw bytes a client sends to a memory agent (the test then half-closes its end).
File name: <phase>__<what>__<ERRNO>.bin
  phase  prehello     the bytes are the first thing on the connection
         after_hello  the test completes a valid Hello exchange first
  ERRNO  the code the agent's Error reply must carry before it closes that connection
Layout (transport/wire.hpp): header = u32 length (header included), u16 id, u16 flags, u64 tag;
Hello payload = {u32 version, u32 max_message, i32 pid, u32 reserved} + u32 count + u16 ids[]
+ u32 count + sized strings; memory ids: windows 16, read 17, write 18 (memory_protocol.hpp).
Run from this directory: python3 make_corpus.py
"""
import os
import struct

HELLO, ERROR, WINDOWS, READ, WRITE = 1, 0, 16, 17, 18


def header(length, mid, tag=7, flags=0):
    return struct.pack('<IHHQ', length, mid, flags, tag)


def frame(mid, payload, tag=7, flags=0, length=None):
    return header(16 + len(payload) if length is None else length, mid, tag, flags) + payload


def hello_payload(version=1, max_message=4 << 20, ids=(), strings=(), id_count=None, reserved=0):
    p = struct.pack('<IIiI', version, max_message, 1234, reserved)
    p += struct.pack('<I', len(ids) if id_count is None else id_count)
    p += b''.join(struct.pack('<H', i) for i in ids)
    p += struct.pack('<I', len(strings))
    for s in strings:
        p += struct.pack('<I', len(s)) + s
    return p


cases = {
    # --- before the handshake ---
    'prehello__read_before_hello__EPROTO': frame(READ, struct.pack('<QQ', 0x1000, 16)),
    'prehello__hello_bad_version__EPROTO': frame(HELLO, hello_payload(version=99)),
    'prehello__hello_reserved_nonzero__EPROTO': frame(HELLO, hello_payload(reserved=5)),
    'prehello__hello_max_below_minimum__EPROTO': frame(HELLO, hello_payload(max_message=100)),
    'prehello__hello_max_above_absolute__EPROTO': frame(HELLO, hello_payload(max_message=1 << 30)),
    'prehello__hello_huge_id_count__EBADMSG': frame(HELLO, hello_payload(id_count=0xFFFFFFFF)),
    'prehello__hello_string_overruns_frame__EBADMSG':
        frame(HELLO, hello_payload()[:-4] + struct.pack('<I', 1) + struct.pack('<I', 1000) + b'abc'),
    'prehello__hello_trailing_bytes__EPROTO': frame(HELLO, hello_payload() + b'\0\0\0'),
    'prehello__hello_truncated_fixed_part__EBADMSG': frame(HELLO, b'\x01\0\0\0'),
    'prehello__hello_oversized_frame__EMSGSIZE': header(0x7FFFFFFF, HELLO),
    'prehello__hello_over_control_limit__EMSGSIZE': header(70000, HELLO) + b'\0' * 100,
    # --- after a valid handshake ---
    'after_hello__length_below_header__EPROTO': header(8, READ),
    'after_hello__length_zero__EPROTO': header(0, READ),
    'after_hello__length_huge__EMSGSIZE': header(0xFFFFFFFF, READ),
    'after_hello__flags_set__EPROTO': frame(READ, struct.pack('<QQ', 0x1000, 16), flags=1),
    'after_hello__read_short_payload__EPROTO': frame(READ, struct.pack('<Q', 0x1000)),
    'after_hello__read_trailing_bytes__EPROTO': frame(READ, struct.pack('<QQQ', 0x1000, 16, 0)),
    'after_hello__write_shorter_than_fixed_part__EBADMSG': frame(WRITE, struct.pack('<Q', 0x1000)),
    'after_hello__write_length_mismatch__EPROTO': frame(WRITE, struct.pack('<QQ', 0x1000, 1000) + b'x' * 10),
    'after_hello__write_length_wraps__EPROTO':
        frame(WRITE, struct.pack('<QQ', 0x1000, 0xFFFFFFFFFFFFFFF0) + b'x' * 16),
    'after_hello__windows_with_payload__EPROTO': frame(WINDOWS, b'\0\0\0\0'),
    'after_hello__second_hello__EPROTO': frame(HELLO, hello_payload()),
    'after_hello__error_frame_sent_to_agent__EPROTO': frame(ERROR, struct.pack('<iHH', 5, 17, 0) + struct.pack('<I', 0)),
    'after_hello__truncated_header__EBADMSG': header(32, READ)[:10],
    'after_hello__truncated_payload__EBADMSG': header(32, READ) + b'\1\2\3\4',
    'after_hello__control_frame_over_limit__EMSGSIZE': header(70000, WINDOWS),
}

here = os.path.dirname(os.path.abspath(__file__))
for name, data in cases.items():
    with open(os.path.join(here, name + '.bin'), 'wb') as f:
        f.write(data)
print(f'wrote {len(cases)} files')
