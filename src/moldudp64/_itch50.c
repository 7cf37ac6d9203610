/*
 * Optional C helper for moldudp64.itch50: finds the message starts of a BinaryFILE
 * chunk. Its pure-Python twin is itch50._scan_py (identical results); the package works
 * without this module.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* scan(data) -> (heads: bytes, end: int)
 *
 * heads holds, as native int64, the offset of each complete length-prefixed message
 * (2-byte big-endian length, then that many bytes) from the start of data; end is the
 * offset just past the last complete one.
 */
static PyObject *
scan(PyObject *self, PyObject *arg)
{
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

static PyMethodDef methods[] = {
    {"scan", scan, METH_O,
     "Offsets (native int64 bytes) of the complete length-prefixed messages, and their end."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_itch50", "Optional C helper for moldudp64.itch50.", -1, methods,
};

PyMODINIT_FUNC
PyInit__itch50(void)
{
    return PyModule_Create(&module);
}
