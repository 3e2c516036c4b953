# Edit a copy of a LUKS2 header made by cryptsetup, for the tests of the
# cryptinline filter's crypt-header: features cryptsetup cannot make on
# this machine (integrity, several segments...) and damaged copies.
#
#   luks_header.py edit HDR COPY CODE [SEQID_ADD]
#       run the Python statements CODE on j, the JSON metadata of COPY
#       (primary, secondary or both), write it back and fix the checksum;
#       add SEQID_ADD to that copy's sequence id
#   luks_header.py damage HDR COPY WHAT
#       break COPY without fixing its checksum; WHAT is checksum (a byte
#       of the stored checksum), json (a byte of the JSON text) or magic
#   luks_header.py bad-json HDR COPY
#       put text that is not JSON into COPY's JSON area, checksum fixed
#   luks_header.py luks1-slot HDR N FIELD VALUE
#       set FIELD (active, iterations, offset or stripes: big-endian
#       32-bit words of the 48-byte slot N at 208 + 48 N) of a LUKS1 header
#
# The format: a 4096-byte binary header (magic, big-endian version,
# header size, sequence id, checksum algorithm at 72, header offset at
# 256, checksum at 448) followed by the JSON area, NUL-padded; the
# checksum (sha256) covers both with the checksum field zeroed.  The
# secondary copy starts at the header size.

import hashlib
import json
import struct
import sys

BIN_LEN = 4096
CSUM_OFF, CSUM_LEN = 448, 64


def fail(msg):
    print("luks_header.py: " + msg, file=sys.stderr)
    sys.exit(1)


def copies(data, which):
    hdr_size = struct.unpack(">Q", data[8:16])[0]
    offsets = {"primary": [0], "secondary": [hdr_size],
               "both": [0, hdr_size]}
    if which not in offsets:
        fail("copy must be primary, secondary or both")
    return hdr_size, offsets[which]


def fix_checksum(data, off, hdr_size):
    alg = data[off + 72:off + 104].rstrip(b"\0").decode()
    if alg != "sha256":
        fail("checksum algorithm %s not handled" % alg)
    data[off + CSUM_OFF:off + CSUM_OFF + CSUM_LEN] = bytes(CSUM_LEN)
    digest = hashlib.sha256(bytes(data[off:off + hdr_size])).digest()
    data[off + CSUM_OFF:off + CSUM_OFF + len(digest)] = digest


def json_area(data, off, hdr_size):
    return off + BIN_LEN, off + hdr_size


def edit(data, which, code, seqid_add):
    hdr_size, offs = copies(data, which)
    for off in offs:
        a, b = json_area(data, off, hdr_size)
        text = bytes(data[a:b]).split(b"\0", 1)[0]
        j = json.loads(text)
        exec(code, {"j": j})
        new = json.dumps(j, separators=(",", ":")).encode()
        if len(new) >= b - a:
            fail("edited JSON does not fit")
        data[a:b] = new + bytes(b - a - len(new))
        seqid = struct.unpack(">Q", data[off + 16:off + 24])[0]
        data[off + 16:off + 24] = struct.pack(">Q", seqid + seqid_add)
        fix_checksum(data, off, hdr_size)


def damage(data, which, what):
    hdr_size, offs = copies(data, which)
    for off in offs:
        if what == "checksum":
            data[off + CSUM_OFF] ^= 0x01
        elif what == "json":
            a, _ = json_area(data, off, hdr_size)
            # Inside the text, still valid JSON: only the checksum tells.
            pos = bytes(data[a:a + 4096]).index(b'"keyslots"') + 1
            data[a + pos] = ord("K")
        elif what == "magic":
            data[off:off + 6] = bytes(6)
        else:
            fail("damage what: checksum, json or magic")


def bad_json(data, which):
    hdr_size, offs = copies(data, which)
    for off in offs:
        a, b = json_area(data, off, hdr_size)
        text = b'{"keyslots": this is not JSON'
        data[a:b] = text + bytes(b - a - len(text))
        fix_checksum(data, off, hdr_size)


LUKS1_SLOT_FIELDS = {"active": 0, "iterations": 4, "offset": 40, "stripes": 44}


def luks1_slot(data, n, field, value):
    if data[:6] != b"LUKS\xba\xbe" or struct.unpack(">H", data[6:8])[0] != 1:
        fail("not a LUKS1 header")
    if field not in LUKS1_SLOT_FIELDS or not 0 <= n < 8:
        fail("luks1-slot N (0-7) FIELD (%s)" % ", ".join(LUKS1_SLOT_FIELDS))
    off = 208 + 48 * n + LUKS1_SLOT_FIELDS[field]
    data[off:off + 4] = struct.pack(">I", value)


def main():
    cmd, path = sys.argv[1], sys.argv[2]
    with open(path, "rb") as f:
        data = bytearray(f.read())
    if cmd == "edit":
        edit(data, sys.argv[3], sys.argv[4],
             int(sys.argv[5]) if len(sys.argv) > 5 else 0)
    elif cmd == "damage":
        damage(data, sys.argv[3], sys.argv[4])
    elif cmd == "bad-json":
        bad_json(data, sys.argv[3])
    elif cmd == "luks1-slot":
        luks1_slot(data, int(sys.argv[3]), sys.argv[4], int(sys.argv[5], 0))
    else:
        fail("unknown command " + cmd)
    with open(path, "r+b") as f:
        f.write(data)


if __name__ == "__main__":
    main()
