# spinners with a given policy/nice/slice: spin.py POLICY NICE SLICE_NS SECONDS N
import ctypes, os, sys, time, multiprocessing as mp
libc = ctypes.CDLL(None, use_errno=True)
class Attr(ctypes.Structure):
    _fields_ = [("size", ctypes.c_uint32), ("policy", ctypes.c_uint32), ("flags", ctypes.c_uint64),
                ("nice", ctypes.c_int32), ("prio", ctypes.c_uint32), ("runtime", ctypes.c_uint64),
                ("deadline", ctypes.c_uint64), ("period", ctypes.c_uint64)]
POL = {"other": 0, "batch": 3, "idle": 5}
def spin(policy, nice, slice_ns, secs):
    a = Attr(48, POL[policy], 0, nice, 0, slice_ns, 0, 0)
    if libc.syscall(314, 0, ctypes.byref(a), 0) != 0:
        print("setattr failed", os.strerror(ctypes.get_errno()), file=sys.stderr)
    if os.getpid() % 1 == 0:
        for line in open(f"/proc/self/sched"):
            if "slice" in line or "policy" in line or "prio" in line: print(os.getpid(), line.strip(), file=sys.stderr)
    end = time.time() + secs
    x = 0
    while time.time() < end:
        for _ in range(10000): x += 1
if __name__ == "__main__":
    policy, nice, slice_ns, secs, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
    ps = [mp.Process(target=spin, args=(policy, nice, slice_ns, secs)) for _ in range(n)]
    [p.start() for p in ps]; [p.join() for p in ps]
