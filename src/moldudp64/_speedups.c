/*
 * Optional C accelerator for the receive hot path. Every function here has a pure-Python
 * twin that gives identical results (wire.parse_blocks, net.recv_batch, the SoupBinTCP runs
 * of soupbintcp.py, the receiver's fast path); the package works without this module.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#ifdef __linux__
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#define HAVE_RECVMMSG 1
#endif

#define HEADER_SIZE 20
#define END_OF_SESSION 0xFFFF

/* A list of the count messages (a 2-byte length, then its bytes) from p + pos on, already
 * checked to lie within the buffer. */
static PyObject *
blocks_list(const unsigned char *p, Py_ssize_t pos, Py_ssize_t count)
{
    PyObject *out = PyList_New(count);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t len = ((Py_ssize_t)p[pos] << 8) | p[pos + 1];
        PyObject *msg = PyBytes_FromStringAndSize((const char *)p + pos + 2, len);
        if (msg == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, msg);
        pos += 2 + len;
    }
    return out;
}

/* parse_blocks(data: bytes) -> list[bytes] | None
 *
 * The messages of a valid downstream packet, [] for a valid heartbeat or end of session,
 * None when the packet is malformed in any way, a data packet whose numbers run past
 * 2**64-1 included (the caller then raises the detailed error).
 */
static PyObject *
parse_blocks(PyObject *self, PyObject *arg)
{
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "parse_blocks() expects bytes");
        return NULL;
    }
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(arg);
    Py_ssize_t end = PyBytes_GET_SIZE(arg);
    if (end < HEADER_SIZE)
        Py_RETURN_NONE;
    unsigned int count = ((unsigned int)p[18] << 8) | p[19];
    if (count == 0 || count == END_OF_SESSION) {
        if (end != HEADER_SIZE)
            Py_RETURN_NONE;
        return PyList_New(0);
    }
    /* Every message's number must fit in 64 bits: seq + count - 1 <= 2**64-1. */
    uint64_t seq = 0;
    for (int k = 10; k < 18; k++)
        seq = (seq << 8) | p[k];
    if (seq > UINT64_MAX - (uint64_t)(count - 1))
        Py_RETURN_NONE;
    /* First pass: validate, so no list is built for a bad packet. */
    Py_ssize_t pos = HEADER_SIZE;
    for (unsigned int i = 0; i < count; i++) {
        if (pos + 2 > end)
            Py_RETURN_NONE;
        Py_ssize_t stop = pos + 2 + (((Py_ssize_t)p[pos] << 8) | p[pos + 1]);
        if (stop > end)
            Py_RETURN_NONE;
        pos = stop;
    }
    if (pos != end)
        Py_RETURN_NONE;
    return blocks_list(p, HEADER_SIZE, count);
}

/* The receiver's fast path (moldudp64.receiver, pure-Python twins _take_next_py and
 * _take_run_py): a datagram is taken when it is a bytes object holding a valid data
 * packet (0 < count < 0xFFFF) of the followed session whose first number is the next
 * expected. Returns its message count (its blocks checked; nothing built), or -1. */
static Py_ssize_t
next_count(PyObject *data, uint64_t expected, const char *session)
{
    if (!PyBytes_CheckExact(data))
        return -1;
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t end = PyBytes_GET_SIZE(data);
    if (end < HEADER_SIZE)
        return -1;
    unsigned int count = ((unsigned int)p[18] << 8) | p[19];
    if (count == 0 || count == END_OF_SESSION)
        return -1;
    uint64_t seq = 0;
    for (int k = 10; k < 18; k++)
        seq = (seq << 8) | p[k];
    if (seq != expected || memcmp(p, session, 10) != 0)
        return -1;
    if (seq > UINT64_MAX - (uint64_t)(count - 1))
        return -1;
    Py_ssize_t pos = HEADER_SIZE;
    for (unsigned int i = 0; i < count; i++) {
        if (pos + 2 > end)
            return -1;
        Py_ssize_t stop = pos + 2 + (((Py_ssize_t)p[pos] << 8) | p[pos + 1]);
        if (stop > end)
            return -1;
        pos = stop;
    }
    return pos == end ? (Py_ssize_t)count : -1;
}

/* Append the messages of a packet next_count() accepted to the list out. */
static int
append_messages(PyObject *out, PyObject *data, Py_ssize_t count)
{
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t pos = HEADER_SIZE;
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t len = ((Py_ssize_t)p[pos] << 8) | p[pos + 1];
        PyObject *msg = PyBytes_FromStringAndSize((const char *)p + pos + 2, len);
        if (msg == NULL)
            return -1;
        int failed = PyList_Append(out, msg);
        Py_DECREF(msg);
        if (failed)
            return -1;
        pos += 2 + len;
    }
    return 0;
}

/* The expected number and the session (10 bytes) of a take_* call; 0 when no datagram
 * can match them (a number outside 0..2**64-1, a session that is not 10 bytes). */
static int
fast_key(PyObject *expected, PyObject *session, uint64_t *seq, const char **raw)
{
    if (!PyBytes_CheckExact(session) || PyBytes_GET_SIZE(session) != 10)
        return 0;
    if (!PyLong_Check(expected))
        return 0;
    unsigned long long v = PyLong_AsUnsignedLongLong(expected);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    *seq = (uint64_t)v;
    *raw = PyBytes_AS_STRING(session);
    return 1;
}

/* take_next(data, expected: int, session: bytes | None) -> list[bytes] | None
 *
 * The messages of data when the fast path takes it (see next_count), else None. */
static PyObject *
take_next(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "take_next() takes 3 arguments");
        return NULL;
    }
    uint64_t expected;
    const char *session;
    if (!fast_key(args[1], args[2], &expected, &session))
        Py_RETURN_NONE;
    Py_ssize_t count = next_count(args[0], expected, session);
    if (count < 0)
        Py_RETURN_NONE;
    return blocks_list((const unsigned char *)PyBytes_AS_STRING(args[0]), HEADER_SIZE, count);
}

/* take_run(datagrams: Sequence, start: int, expected: int, session: bytes | None,
 *          out: list) -> int
 *
 * Take datagrams[start:] while each is the next one (see next_count), their messages
 * appended to out; the index of the first not taken (len(datagrams) when all were). */
static PyObject *
take_run(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5 || !PyList_Check(args[4])) {
        PyErr_SetString(PyExc_TypeError, "take_run() takes 5 arguments, the last a list");
        return NULL;
    }
    Py_ssize_t start = PyNumber_AsSsize_t(args[1], PyExc_OverflowError);
    if (start == -1 && PyErr_Occurred())
        return NULL;
    uint64_t expected;
    const char *session;
    if (start < 0 || !fast_key(args[2], args[3], &expected, &session))
        return PyLong_FromSsize_t(start);
    PyObject *seq = PySequence_Fast(args[0], "take_run() expects a sequence");
    if (seq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    Py_ssize_t i = start;
    PyObject *out = args[4];
    while (i < n) {
        Py_ssize_t count = next_count(items[i], expected, session);
        if (count < 0)
            break;
        if (append_messages(out, items[i], count) < 0) {
            Py_DECREF(seq);
            return NULL;
        }
        expected += (uint64_t)count;
        i++;
        if (expected == 0)
            break; /* the last number, 2**64-1, was taken: nothing can follow */
    }
    Py_DECREF(seq);
    return PyLong_FromSsize_t(i > start ? i : start);
}

/* join_blocks(messages: list[bytes]) -> bytes
 *
 * The message blocks of `messages` back to back (2-byte big-endian length, then the data):
 * the body of a downstream packet, and exactly the BinaryFILE format. ValueError for a
 * message longer than 65,535 bytes.
 */
static PyObject *
join_blocks(PyObject *self, PyObject *arg)
{
    if (!PyList_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "join_blocks() expects a list of bytes");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(arg);
    Py_ssize_t total = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *m = PyList_GET_ITEM(arg, i);
        if (!PyBytes_Check(m)) {
            PyErr_SetString(PyExc_TypeError, "join_blocks() expects a list of bytes");
            return NULL;
        }
        Py_ssize_t len = PyBytes_GET_SIZE(m);
        if (len > 0xFFFF) {
            PyErr_Format(PyExc_ValueError, "message of %zd bytes exceeds 65535", len);
            return NULL;
        }
        total += 2 + len;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL)
        return NULL;
    unsigned char *q = (unsigned char *)PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *m = PyList_GET_ITEM(arg, i);
        Py_ssize_t len = PyBytes_GET_SIZE(m);
        q[0] = (unsigned char)(len >> 8);
        q[1] = (unsigned char)(len & 0xff);
        memcpy(q + 2, PyBytes_AS_STRING(m), (size_t)len);
        q += 2 + len;
    }
    return out;
}

/* SoupBinTCP runs (moldudp64.soupbintcp): a Sequenced Data packet is a 2-byte length L,
 * 'S', then L-1 bytes of message; a BinaryFILE block is a 2-byte length, then the
 * message. A run of one is the run of the other with the type byte and a length off by
 * one, so a whole buffer converts in one pass. The scans stop at the first packet that is
 * incomplete, not 'S', or of length 0 (the caller's slow path takes it). */

/* The end of the run of whole 'S' packets from pos, and how many there are. */
static Py_ssize_t
soup_scan(const unsigned char *p, Py_ssize_t pos, Py_ssize_t end, Py_ssize_t *count)
{
    Py_ssize_t n = 0;
    while (pos + 3 <= end && p[pos + 2] == 'S') {
        Py_ssize_t len = ((Py_ssize_t)p[pos] << 8) | p[pos + 1];
        if (len == 0 || pos + 2 + len > end)
            break;
        pos += 2 + len;
        n++;
    }
    *count = n;
    return pos;
}

/* (buffer, pos) arguments: any bytes-like object, a position within it. */
static int
buffer_and_pos(PyObject *args, const char *name, Py_buffer *view, Py_ssize_t *pos)
{
    if (!PyArg_ParseTuple(args, "y*n", view, pos))
        return -1;
    if (*pos < 0 || *pos > view->len) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_ValueError, "%s(): position out of range", name);
        return -1;
    }
    return 0;
}

/* Copy len bytes; short messages (the usual case) in one fixed 32-byte move when both
 * sides have room for it (the bytes past len are overwritten by what follows). */
static inline void
copy_message(unsigned char *q, const unsigned char *q_end, const unsigned char *p,
             const unsigned char *p_end, Py_ssize_t len)
{
    if (len <= 32 && q + 32 <= q_end && p + 32 <= p_end)
        memcpy(q, p, 32);
    else
        memcpy(q, p, (size_t)len);
}

/* soup_to_blocks(buf: Buffer, pos: int) -> tuple[int, bytes, int]
 *
 * The run of Sequenced Data packets from pos as BinaryFILE blocks: (count, blocks, the
 * position after the run). */
static PyObject *
soup_to_blocks(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t pos;
    if (buffer_and_pos(args, "soup_to_blocks", &view, &pos) < 0)
        return NULL;
    const unsigned char *p = (const unsigned char *)view.buf;
    Py_ssize_t end = view.len;
    const unsigned char *p_end = p + end;
    Py_ssize_t count;
    Py_ssize_t stop = soup_scan(p, pos, end, &count);
    /* Sized exactly (a first pass over the lengths): no resize, so the allocator gets
     * back the same sizes read after read and reuses its memory. */
    PyObject *out = PyBytes_FromStringAndSize(NULL, stop - pos - count);
    if (out == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    unsigned char *q = (unsigned char *)PyBytes_AS_STRING(out);
    const unsigned char *q_end = q + (stop - pos - count);
    while (pos < stop) {
        Py_ssize_t len = (((Py_ssize_t)p[pos] << 8) | p[pos + 1]) - 1;
        q[0] = (unsigned char)(len >> 8);
        q[1] = (unsigned char)(len & 0xff);
        copy_message(q + 2, q_end, p + pos + 3, p_end, len);
        q += 2 + len;
        pos += 3 + len;
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("(nNn)", count, out, stop);
}

/* soup_split(buf: Buffer, pos: int) -> tuple[list[bytes], int]
 *
 * The messages of the run of Sequenced Data packets from pos, and the position after it. */
static PyObject *
soup_split(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t pos, count;
    if (buffer_and_pos(args, "soup_split", &view, &pos) < 0)
        return NULL;
    const unsigned char *p = (const unsigned char *)view.buf;
    Py_ssize_t stop = soup_scan(p, pos, view.len, &count);
    PyObject *out = PyList_New(count);
    if (out == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        Py_ssize_t len = (((Py_ssize_t)p[pos] << 8) | p[pos + 1]) - 1;
        PyObject *msg = PyBytes_FromStringAndSize((const char *)p + pos + 3, len);
        if (msg == NULL) {
            Py_DECREF(out);
            PyBuffer_Release(&view);
            return NULL;
        }
        PyList_SET_ITEM(out, i, msg);
        pos += 3 + len;
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("(Nn)", out, stop);
}

/* blocks_to_soup(blocks: bytes, max_count: int) -> tuple[int, bytes, int]
 *
 * Up to max_count whole BinaryFILE blocks from the start of blocks as Sequenced Data
 * packets: (count, packets, bytes of blocks taken). Stops before an incomplete block and
 * before a message of 65,535 bytes (too long for a packet). */
static PyObject *
blocks_to_soup(PyObject *self, PyObject *args)
{
    PyObject *buf;
    Py_ssize_t max_count;
    if (!PyArg_ParseTuple(args, "On", &buf, &max_count))
        return NULL;
    if (!PyBytes_Check(buf)) {
        PyErr_SetString(PyExc_TypeError, "blocks_to_soup() expects bytes");
        return NULL;
    }
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(buf);
    Py_ssize_t end = PyBytes_GET_SIZE(buf);
    Py_ssize_t pos = 0, count = 0;
    while (count < max_count && pos + 2 <= end) {
        Py_ssize_t len = ((Py_ssize_t)p[pos] << 8) | p[pos + 1];
        if (len == 0xFFFF || pos + 2 + len > end)
            break;
        pos += 2 + len;
        count++;
    }
    PyObject *out = PyBytes_FromStringAndSize(NULL, pos + count);
    if (out == NULL)
        return NULL;
    unsigned char *q = (unsigned char *)PyBytes_AS_STRING(out);
    const unsigned char *q_end = q + pos + count;
    Py_ssize_t at = 0;
    while (at < pos) {
        Py_ssize_t len = ((Py_ssize_t)p[at] << 8) | p[at + 1];
        q[0] = (unsigned char)((len + 1) >> 8);
        q[1] = (unsigned char)((len + 1) & 0xff);
        q[2] = 'S';
        copy_message(q + 3, q_end, p + at + 2, p + end, len);
        q += 3 + len;
        at += 2 + len;
    }
    return Py_BuildValue("(nNn)", count, out, pos);
}

/* scan_blocks(data: bytes, max_count: int) -> tuple[int, int]
 *
 * How many whole BinaryFILE blocks (at most max_count) start data, and their bytes. */
static PyObject *
scan_blocks(PyObject *self, PyObject *args)
{
    PyObject *buf;
    Py_ssize_t max_count;
    if (!PyArg_ParseTuple(args, "On", &buf, &max_count))
        return NULL;
    if (!PyBytes_Check(buf)) {
        PyErr_SetString(PyExc_TypeError, "scan_blocks() expects bytes");
        return NULL;
    }
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(buf);
    Py_ssize_t end = PyBytes_GET_SIZE(buf);
    Py_ssize_t pos = 0, count = 0;
    while (count < max_count && pos + 2 <= end) {
        Py_ssize_t stop = pos + 2 + (((Py_ssize_t)p[pos] << 8) | p[pos + 1]);
        if (stop > end)
            break;
        pos = stop;
        count++;
    }
    return Py_BuildValue("(nn)", count, pos);
}

/* split_binaryfile(blocks: bytes) -> list[bytes]
 *
 * The messages of whole BinaryFILE blocks (stops at an incomplete one). */
static PyObject *
split_binaryfile(PyObject *self, PyObject *arg)
{
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "split_binaryfile() expects bytes");
        return NULL;
    }
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(arg);
    Py_ssize_t end = PyBytes_GET_SIZE(arg);
    Py_ssize_t pos = 0, count = 0;
    while (pos + 2 <= end) {
        Py_ssize_t stop = pos + 2 + (((Py_ssize_t)p[pos] << 8) | p[pos + 1]);
        if (stop > end)
            break;
        pos = stop;
        count++;
    }
    return blocks_list(p, 0, count);
}

#ifdef HAVE_RECVMMSG
#define MAX_BATCH 256

static char *shared_arena = NULL;
static int arena_busy = 0;

static void
release_arena(char *arena, int own)
{
    if (own)
        PyMem_RawFree(arena);
    else
        arena_busy = 0;
}

#ifndef SO_RXQ_OVFL
#define SO_RXQ_OVFL 40
#endif

/* Up to max_count datagrams in one recvmmsg() call (no wait); [] when none is ready.
 * With drops != NULL, also the socket's kernel drop counter (SO_RXQ_OVFL, enabled on the
 * socket by the caller) as the last datagram carried it, or -1 when none carried it. */
static PyObject *
recv_common(int fd, int max_count, int bufsize, long long *drops)
{
    if (max_count < 1)
        return PyList_New(0);
    if (max_count > MAX_BATCH)
        max_count = MAX_BATCH;
    if (bufsize < 1 || bufsize > 65536) {
        PyErr_SetString(PyExc_ValueError, "bufsize must be 1..65536");
        return NULL;
    }
    /* One contiguous arena, kept between calls; datagrams are copied out into bytes
     * objects afterwards. The GIL guards `arena_busy`; a second thread in here at the
     * same time gets an arena of its own for that call. */
    size_t arena_size = (size_t)MAX_BATCH * 65536;
    char *arena;
    int own = 0;
    if (!arena_busy) {
        if (shared_arena == NULL) {
            shared_arena = PyMem_RawMalloc(arena_size);
            if (shared_arena == NULL)
                return PyErr_NoMemory();
        }
        arena = shared_arena;
        arena_busy = 1;
    } else {
        arena = PyMem_RawMalloc((size_t)max_count * (size_t)bufsize);
        if (arena == NULL)
            return PyErr_NoMemory();
        own = 1;
    }
    struct mmsghdr msgs[MAX_BATCH];
    struct iovec iov[MAX_BATCH];
    /* room for one SO_RXQ_OVFL control message per datagram */
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(uint32_t))];
    } ctrl[MAX_BATCH];
    memset(msgs, 0, sizeof(struct mmsghdr) * (size_t)max_count);
    for (int i = 0; i < max_count; i++) {
        iov[i].iov_base = arena + (size_t)i * (size_t)bufsize;
        iov[i].iov_len = (size_t)bufsize;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        if (drops != NULL) {
            msgs[i].msg_hdr.msg_control = ctrl[i].buf;
            msgs[i].msg_hdr.msg_controllen = sizeof(ctrl[i].buf);
        }
    }
    int n;
    Py_BEGIN_ALLOW_THREADS
    n = recvmmsg(fd, msgs, (unsigned int)max_count, MSG_DONTWAIT, NULL);
    Py_END_ALLOW_THREADS
    if (drops != NULL)
        *drops = -1;
    if (n < 0) {
        int err = errno;
        release_arena(arena, own);
        if (err == EAGAIN || err == EWOULDBLOCK)
            return PyList_New(0);
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *out = PyList_New(n);
    if (out == NULL) {
        release_arena(arena, own);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        PyObject *b = PyBytes_FromStringAndSize(iov[i].iov_base, (Py_ssize_t)msgs[i].msg_len);
        if (b == NULL) {
            Py_DECREF(out);
            release_arena(arena, own);
            return NULL;
        }
        PyList_SET_ITEM(out, i, b);
        if (drops != NULL) {
            struct msghdr *h = &msgs[i].msg_hdr;
            for (struct cmsghdr *c = CMSG_FIRSTHDR(h); c != NULL; c = CMSG_NXTHDR(h, c)) {
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_RXQ_OVFL &&
                    c->cmsg_len >= CMSG_LEN(sizeof(uint32_t))) {
                    uint32_t v;
                    memcpy(&v, CMSG_DATA(c), sizeof v);
                    *drops = (long long)v;
                }
            }
        }
    }
    release_arena(arena, own);
    return out;
}

/* recv_batch(fd: int, max_count: int, bufsize: int) -> list[bytes]
 *
 * Up to max_count datagrams from a non-blocking socket in one recvmmsg() call (no wait);
 * [] when none is ready. Datagrams longer than bufsize are truncated by the kernel, as
 * recv() would; bufsize should be 65536. Raises OSError on other errors.
 */
static PyObject *
recv_batch(PyObject *self, PyObject *args)
{
    int fd, max_count, bufsize;
    if (!PyArg_ParseTuple(args, "iii", &fd, &max_count, &bufsize))
        return NULL;
    return recv_common(fd, max_count, bufsize, NULL);
}

/* recv_batch_drops(fd: int, max_count: int, bufsize: int) -> tuple[list[bytes], int]
 *
 * recv_batch(), and the kernel's drop count for the socket (SO_RXQ_OVFL, which the caller
 * enabled) as the last datagram of the batch carried it; -1 when none carried it.
 */
static PyObject *
recv_batch_drops(PyObject *self, PyObject *args)
{
    int fd, max_count, bufsize;
    long long drops = -1;
    if (!PyArg_ParseTuple(args, "iii", &fd, &max_count, &bufsize))
        return NULL;
    PyObject *out = recv_common(fd, max_count, bufsize, &drops);
    if (out == NULL)
        return NULL;
    return Py_BuildValue("(NL)", out, drops);
}
#endif

static PyMethodDef methods[] = {
    {"parse_blocks", parse_blocks, METH_O,
     "Messages of a valid packet as bytes; None when malformed."},
    {"take_next", (PyCFunction)(void (*)(void))take_next, METH_FASTCALL,
     "The messages of the next data packet of the session; None for any other datagram."},
    {"take_run", (PyCFunction)(void (*)(void))take_run, METH_FASTCALL,
     "Take datagrams from start while each is the next data packet; the index of the first not."},
    {"join_blocks", join_blocks, METH_O,
     "Message blocks (2-byte length + data) of a list of bytes, back to back."},
    {"soup_to_blocks", soup_to_blocks, METH_VARARGS,
     "A run of SoupBinTCP Sequenced Data packets as BinaryFILE blocks."},
    {"soup_split", soup_split, METH_VARARGS,
     "The messages of a run of SoupBinTCP Sequenced Data packets."},
    {"blocks_to_soup", blocks_to_soup, METH_VARARGS,
     "Whole BinaryFILE blocks as SoupBinTCP Sequenced Data packets."},
    {"scan_blocks", scan_blocks, METH_VARARGS,
     "How many whole BinaryFILE blocks (at most max_count) start data, and their bytes."},
    {"split_binaryfile", split_binaryfile, METH_O,
     "The messages of whole BinaryFILE blocks."},
#ifdef HAVE_RECVMMSG
    {"recv_batch", recv_batch, METH_VARARGS,
     "Up to max_count datagrams in one recvmmsg() call; [] when none is ready."},
    {"recv_batch_drops", recv_batch_drops, METH_VARARGS,
     "recv_batch() and the socket's SO_RXQ_OVFL drop count (-1 when not carried)."},
#endif
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "moldudp64._speedups",
    "C accelerator for the receive hot path (optional).", -1, methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&module);
}
