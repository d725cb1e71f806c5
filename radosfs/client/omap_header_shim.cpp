// The omap header of one object, for radosfs (radosfs/client/omap_header.py loads this).
//
// python-rados and librados' C API can neither read nor set an omap header; only the C++
// API can. These functions take the C API's rados_ioctx_t (radosfs's listing handle, see
// radosfs/client/listing.py), so that Python can call them through ctypes. They block:
// call them in a worker thread (radosfs: Bridge.run). Built by scripts/setup (Debian's
// libradospp-dev has the header):
//   g++ -O2 -shared -fPIC -o radosfs/client/libradosfs_omap.so
//       radosfs/client/omap_header_shim.cpp -lrados
// Each returns 0 or a negative errno; no C++ exception leaves them.
#include <rados/librados.hpp>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <new>

extern "C" {

// The header of `oid` (`len` bytes; 0: none): *out is malloc'ed, release it with
// radosfs_omap_free. -ENOENT when there is no such object.
int radosfs_omap_get_header(rados_ioctx_t io, const char *oid, char **out, size_t *len) {
  *out = nullptr;
  *len = 0;
  try {
    librados::IoCtx ctx;
    librados::IoCtx::from_rados_ioctx_t(io, ctx);
    librados::bufferlist bl;
    int rc = ctx.omap_get_header(oid, &bl);
    if (rc < 0) {
      return rc;
    }
    size_t n = bl.length();
    char *buf = static_cast<char *>(std::malloc(n ? n : 1));
    if (buf == nullptr) {
      return -ENOMEM;
    }
    if (n) {
      bl.begin().copy(n, buf);
    }
    *out = buf;
    *len = n;
    return 0;
  } catch (const std::bad_alloc &) {
    return -ENOMEM;
  } catch (...) {
    return -EIO;
  }
}

// Set the header of `oid`, which must exist (-ENOENT otherwise: never creates it).
int radosfs_omap_set_header(rados_ioctx_t io, const char *oid, const char *buf, size_t len) {
  try {
    librados::IoCtx ctx;
    librados::IoCtx::from_rados_ioctx_t(io, ctx);
    librados::bufferlist bl;
    bl.append(buf, len);
    librados::ObjectWriteOperation op;
    op.assert_exists();
    op.omap_set_header(bl);
    return ctx.operate(oid, &op);
  } catch (const std::bad_alloc &) {
    return -ENOMEM;
  } catch (...) {
    return -EIO;
  }
}

void radosfs_omap_free(char *p) { std::free(p); }

}  // extern "C"
