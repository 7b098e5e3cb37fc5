# dlopen and dlmopen as a program sees them: $ORIGIN in a name is the
# calling object's directory (ctypes' _ctypes module, then libffi calling
# libc's functions), and a failed load's dlerror() is the loader's, read
# once. Prints one line per case, the same with the library as without.
import ctypes, os, _ctypes

here = os.path.dirname(_ctypes.__file__)
ssl_so = sorted(f for f in os.listdir(here) if f.startswith("_ssl."))[0]
try:
    print("ctypes $ORIGIN:", ctypes.CDLL("$ORIGIN/" + ssl_so)._handle != 0)
except OSError as e:
    print("ctypes $ORIGIN:", e)
libc = ctypes.CDLL(None)
libc.dlopen.restype = libc.dlmopen.restype = ctypes.c_void_p
libc.dlopen.argtypes = [ctypes.c_char_p, ctypes.c_int]
libc.dlmopen.argtypes = [ctypes.c_long, ctypes.c_char_p, ctypes.c_int]
libc.dlerror.restype = ctypes.c_char_p
# libffi's directory is the system's: one library not yet loaded for each
for fn, lib in (("dlopen", b"libz.so.1"), ("dlmopen", b"liblzma.so.5")):
    for name in (b"$ORIGIN/" + lib, b"/nonexistent/x.so"):
        h = libc.dlopen(name, 2) if fn == "dlopen" else libc.dlmopen(0, name, 2)
        print(fn, name.decode(), bool(h), libc.dlerror(), libc.dlerror())
