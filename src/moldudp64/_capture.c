/* Optional accelerator for moldudp64.capture: cut plain Ethernet/IPv4/UDP datagrams out
 * of a buffer of classic pcap records, a run at a time.
 *
 * scan(data, pos, end, little_endian, scale, port, max_record) walks the records of
 * ``data[:end]`` (any bytes-like object) from ``pos`` and returns (pos, frames, other_port, key, times, payloads):
 *   - times/payloads: the timestamp and UDP payload of each datagram taken, all from the
 *     same source and destination (``key``: the 12 bytes IPv4 src, dst, sport, dport of
 *     the run; None when nothing was taken);
 *   - frames: records consumed (datagrams taken plus those left out by the port filter);
 *   - other_port: datagrams left out because neither port is ``port`` (-1: no filter);
 *   - pos: where it stopped: the end of the data, an incomplete record, a record whose
 *     captured length exceeds ``max_record``, a frame that is not plain IPv4 (no options,
 *     not a fragment) + UDP, or a datagram of other endpoints. The caller deals with the
 *     record at ``pos`` (moldudp64.capture decodes it the general way) and calls again.
 * The checks are the ones of the pure-Python fast path in capture.py, which gives the
 * same results (tests compare them).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

static inline unsigned long rd32(const unsigned char *p, int little) {
    if (little)
        return (unsigned long)p[0] | ((unsigned long)p[1] << 8) | ((unsigned long)p[2] << 16) |
               ((unsigned long)p[3] << 24);
    return (unsigned long)p[3] | ((unsigned long)p[2] << 8) | ((unsigned long)p[1] << 16) |
           ((unsigned long)p[0] << 24);
}

static inline unsigned int rd16(const unsigned char *p) { return ((unsigned int)p[0] << 8) | p[1]; }

static PyObject *scan(PyObject *self, PyObject *args) {
    Py_buffer view;
    Py_ssize_t pos, limit;
    int little;
    double scale;
    long port;
    Py_ssize_t max_record;
    if (!PyArg_ParseTuple(args, "y*nnpdln:scan", &view, &pos, &limit, &little, &scale, &port,
                          &max_record))
        return NULL;
    const unsigned char *data = (const unsigned char *)view.buf;
    Py_ssize_t size = limit < view.len ? limit : view.len;
    PyObject *times = PyList_New(0);
    PyObject *payloads = PyList_New(0);
    PyObject *result = NULL;
    unsigned char key[12];
    int have_key = 0;
    Py_ssize_t frames = 0, other = 0;
    if (times == NULL || payloads == NULL)
        goto done;
    if (pos < 0)
        pos = 0;
    while (pos + 16 <= size) {
        const unsigned char *rec = data + pos;
        unsigned long sec = rd32(rec, little);
        unsigned long frac = rd32(rec + 4, little);
        unsigned long caplen = rd32(rec + 8, little);
        if ((Py_ssize_t)caplen > max_record)
            break;
        Py_ssize_t start = pos + 16;
        Py_ssize_t end = start + (Py_ssize_t)caplen;
        if (end > size || caplen < 42)
            break;
        const unsigned char *f = data + start;
        unsigned int etype = rd16(f + 12), total = rd16(f + 16), frag = rd16(f + 20);
        unsigned int ulen = rd16(f + 38);
        if (etype != 0x0800 || f[14] != 0x45 || f[23] != 17 || (frag & 0x3FFF))
            break;
        Py_ssize_t ip = start + 14;
        if (ip + (Py_ssize_t)total > end || ulen < 8 || total < 20 || ulen > total - 20)
            break;
        const unsigned char *k = data + ip + 12;
        if (have_key && memcmp(k, key, 12) != 0)
            break;
        frames++;
        pos = end;
        if (port >= 0 && (long)rd16(k + 8) != port && (long)rd16(k + 10) != port) {
            other++;
            continue;
        }
        if (!have_key) {
            memcpy(key, k, 12);
            have_key = 1;
        }
        PyObject *ts = PyFloat_FromDouble((double)sec + (double)frac * scale);
        if (ts == NULL)
            goto done;
        int rc = PyList_Append(times, ts);
        Py_DECREF(ts);
        if (rc < 0)
            goto done;
        PyObject *payload =
            PyBytes_FromStringAndSize((const char *)data + ip + 28, (Py_ssize_t)ulen - 8);
        if (payload == NULL)
            goto done;
        rc = PyList_Append(payloads, payload);
        Py_DECREF(payload);
        if (rc < 0)
            goto done;
    }
    if (have_key)
        result = Py_BuildValue("nnny#OO", pos, frames, other, (const char *)key, (Py_ssize_t)12,
                               times, payloads);
    else
        result = Py_BuildValue("nnnOOO", pos, frames, other, Py_None, times, payloads);
done:
    Py_XDECREF(times);
    Py_XDECREF(payloads);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS,
     "scan(data, pos, end, little_endian, scale, port, max_record) -> "
     "(pos, frames, other_port, key, times, payloads)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "moldudp64._capture",
    "C accelerator for moldudp64.capture (pcap record and Ethernet/IPv4/UDP slicing).", -1,
    methods,
};

PyMODINIT_FUNC PyInit__capture(void) { return PyModule_Create(&module); }
