/*
 * Optional C helpers for moldudp64.itch50: find the message starts of a BinaryFILE chunk
 * (scan), and copy fixed-size records out of a buffer (gather). Their twins are
 * itch50._scan_py and a NumPy gather (identical results); the package works without them.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* scan(data) -> (heads: bytes, end: int)
 *
 * heads holds, as native int64, the offset of each complete length-prefixed message
 * (2-byte big-endian length, then that many bytes) from the start of data; end is the
 * offset just past the last complete one.
 */
static PyObject *
scan(PyObject *self, PyObject *arg)
{
    (void)self;
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const unsigned char *data = (const unsigned char *)view.buf;
    Py_ssize_t size = view.len;
    /* at most one message per 2 bytes */
    PyObject *heads = PyBytes_FromStringAndSize(NULL, (size / 2 + 1) * (Py_ssize_t)sizeof(int64_t));
    if (heads == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    int64_t *out = (int64_t *)PyBytes_AS_STRING(heads);
    Py_ssize_t count = 0, pos = 0;
    Py_BEGIN_ALLOW_THREADS
    while (pos + 2 <= size) {
        Py_ssize_t stop = pos + 2 + (((Py_ssize_t)data[pos] << 8) | data[pos + 1]);
        if (stop > size)
            break;
        out[count++] = (int64_t)pos;
        pos = stop;
    }
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&view);
    if (_PyBytes_Resize(&heads, count * (Py_ssize_t)sizeof(int64_t)) < 0)
        return NULL;
    return Py_BuildValue("(Nn)", heads, pos);
}

/* gather(data, starts, size) -> bytes
 *
 * data[s:s + size] for each s of starts (native int64), back to back. Raises ValueError
 * when a record would fall outside data.
 */
static PyObject *
gather(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer data, starts;
    Py_ssize_t size;
    if (!PyArg_ParseTuple(args, "y*y*n", &data, &starts, &size))
        return NULL;
    PyObject *out = NULL;
    Py_ssize_t count = starts.len / (Py_ssize_t)sizeof(int64_t);
    if (size < 0 || starts.len % (Py_ssize_t)sizeof(int64_t) != 0
        || (size > 0 && count > PY_SSIZE_T_MAX / size)) {
        PyErr_SetString(PyExc_ValueError, "gather(): bad starts or size");
        goto done;
    }
    const int64_t *at = (const int64_t *)starts.buf;
    for (Py_ssize_t i = 0; i < count; i++) {
        if (at[i] < 0 || at[i] > (int64_t)(data.len - size)) {
            PyErr_SetString(PyExc_ValueError, "gather(): a record falls outside the data");
            goto done;
        }
    }
    out = PyBytes_FromStringAndSize(NULL, count * size);
    if (out == NULL)
        goto done;
    char *dst = PyBytes_AS_STRING(out);
    const char *src = (const char *)data.buf;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < count; i++)
        memcpy(dst + i * size, src + at[i], (size_t)size);
    Py_END_ALLOW_THREADS
done:
    PyBuffer_Release(&data);
    PyBuffer_Release(&starts);
    return out;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_O,
     "Offsets (native int64 bytes) of the complete length-prefixed messages, and their end."},
    {"gather", gather, METH_VARARGS,
     "data[s:s + size] for each native int64 s of starts, back to back."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_itch50",
    .m_doc = "Optional C helpers for moldudp64.itch50.",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__itch50(void)
{
    return PyModule_Create(&module);
}
