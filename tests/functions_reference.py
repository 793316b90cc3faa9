"""Independent re-implementation of the microfaas function suite, used by tests/functions.rs.

Reads {"function": name, "inputs": [...]} as JSON on stdin and prints the expected outputs as a
JSON list. Written from the documented algorithms (src/functions/*.rs headers) with Python's
own hashlib, zlib, re and math, and openssl(1) for AES, so a bug in the Rust code cannot hide
by being repeated here.
"""

import hashlib
import json
import math
import string
import subprocess
import sys
import zlib

MASK = (1 << 64) - 1
ALNUM = string.ascii_lowercase + string.ascii_uppercase + string.digits


class SplitMix64:
    def __init__(self, seed):
        self.state = seed & MASK

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def below(self, n):
        return self.next() % n

    def unit(self):
        return (self.next() >> 11) / float(1 << 53)

    def string(self, n):
        return "".join(ALNUM[self.below(len(ALNUM))] for _ in range(n))


def text(inp, key, default_len):
    if key in inp:
        return inp[key]
    return SplitMix64(inp.get("seed", 0)).string(inp.get("length", default_len))


def float_operations(inp):
    n = inp["n"]
    s = c = q = 0.0
    for i in range(n):
        s += math.sin(i)
        c += math.cos(i)
        q += math.sqrt(i)
    return {"n": n, "sin": s, "cos": c, "sqrt": q}


def cascade(algo):
    def run(inp):
        data = text(inp, "data", 64).encode()
        for _ in range(inp["rounds"]):
            data = hashlib.new(algo, data).hexdigest().encode()
        return {"rounds": inp["rounds"], "digest": data.decode()}

    return run


def matmul(inp):
    n = inp["size"]
    rng = SplitMix64(inp.get("seed", 0))
    a = [[rng.unit() for _ in range(n)] for _ in range(n)]
    b = [[rng.unit() for _ in range(n)] for _ in range(n)]
    c = []
    for i in range(n):
        row = []
        for j in range(n):
            acc = 0.0
            for k in range(n):
                acc += a[i][k] * b[k][j]
            row.append(acc)
        c.append(row)
    return {"size": n, "c": c}


def html_generation(inp):
    rng = SplitMix64(inp.get("seed", 0))
    rows = "".join(
        "<tr><td>%d</td><td>%d</td></tr>" % (i, rng.below(1000000)) for i in range(inp["n"])
    )
    return {"n": inp["n"], "html": "<html><body><table>" + rows + "</table></body></html>"}


def pyaes(inp):
    key = inp.get("key", "a1f6258c877d5fcd8964484538bfc92c")
    plain = text(inp, "text", 16384).encode()
    sealed = subprocess.run(
        ["openssl", "enc", "-aes-128-ecb", "-K", key],
        input=plain, capture_output=True, check=True,
    ).stdout
    opened = subprocess.run(
        ["openssl", "enc", "-d", "-aes-128-ecb", "-K", key],
        input=sealed, capture_output=True, check=True,
    ).stdout
    assert opened == plain
    return {
        "rounds": inp["rounds"],
        "bytes": len(sealed),
        "ciphertext_sha256": hashlib.sha256(sealed).hexdigest(),
    }


def zlib_decompress(inp):
    out = zlib.decompress(bytes.fromhex(inp["data"]))
    return {"length": len(out), "sha256": hashlib.sha256(out).hexdigest()}


def regex(anchored):
    import re

    def run(inp):
        pattern = re.compile(inp.get("pattern", r"\d\D\d"), re.ASCII)
        t = text(inp, "text", 64)
        m = pattern.match(t) if anchored else pattern.search(t)
        if m is None:
            return {"matched": False, "match": None, "start": None, "end": None}
        return {"matched": True, "match": m.group(0), "start": m.start(), "end": m.end()}

    return run


FUNCTIONS = {
    "float_operations": float_operations,
    "cascading_sha256": cascade("sha256"),
    "cascading_md5": cascade("md5"),
    "matmul": matmul,
    "html_generation": html_generation,
    "pyaes": pyaes,
    "zlib_decompress": zlib_decompress,
    "regex_search": regex(False),
    "regex_match": regex(True),
}

if __name__ == "__main__":
    if sys.argv[1:] == ["compress"]:
        # Compress each text with each level; print [{"level", "text", "data"}].
        texts = json.load(sys.stdin)
        out = []
        for t in texts:
            for level in (0, 1, 6, 9):
                out.append({"level": level, "text": t,
                            "data": zlib.compress(t.encode(), level).hex()})
        json.dump(out, sys.stdout)
    else:
        req = json.load(sys.stdin)
        json.dump([FUNCTIONS[req["function"]](i) for i in req["inputs"]], sys.stdout)
