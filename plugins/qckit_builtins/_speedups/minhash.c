/* qckit_builtins._minhash: MinHash signatures of a batch of documents given as feature hashes.
 *
 * The reference and fallback is qckit_builtins.filters.dedup.batch_signatures (numpy); the result is
 * exactly its: for each document and permutation k, the smallest (a[k] * h + b[k]) mod 2**32 over the
 * document's feature hashes h (datasketch's affine32 permutations), 2**32 - 1 for a document without
 * features. numpy needs a [features, permutations] temporary and a reduce per document; this loop keeps
 * one row of minima and lets the compiler vectorize the permutations.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

PyDoc_STRVAR(signatures_doc,
"signatures(features, counts, a, b, /) -> bytes\n\n"
"features: uint32 feature hashes of every document, concatenated; counts: int64 count per document;\n"
"a, b: uint32 permutation parameters (num_perm each). Returns the uint32 signatures, documents after\n"
"documents (len(counts) * num_perm values, native byte order): dedup.batch_signatures's result.");

static PyObject *
signatures(PyObject *Py_UNUSED(module), PyObject *args)
{
    Py_buffer fv, cv, av, bv;
    if (!PyArg_ParseTuple(args, "y*y*y*y*:signatures", &fv, &cv, &av, &bv))
        return NULL;
    PyObject *out = NULL;
    Py_ssize_t n_features = fv.len / 4, n_docs = cv.len / 8, k = av.len / 4;
    if (fv.len % 4 || cv.len % 8 || av.len % 4 || bv.len != av.len || k == 0) {
        PyErr_SetString(PyExc_ValueError, "features, counts, a, b must be uint32, int64, uint32[k], uint32[k]");
        goto done;
    }
    const uint32_t *features = fv.buf, *a = av.buf, *b = bv.buf;
    const int64_t *counts = cv.buf;
    Py_ssize_t total = 0;
    for (Py_ssize_t d = 0; d < n_docs; d++) {
        if (counts[d] < 0 || counts[d] > n_features - total) {
            PyErr_SetString(PyExc_ValueError, "counts do not add up to the number of features");
            goto done;
        }
        total += counts[d];
    }
    if (total != n_features) {
        PyErr_SetString(PyExc_ValueError, "counts do not add up to the number of features");
        goto done;
    }
    if ((out = PyBytes_FromStringAndSize(NULL, n_docs * k * 4)) == NULL)
        goto done;
    uint32_t *sig = (uint32_t *)PyBytes_AS_STRING(out);
    Py_BEGIN_ALLOW_THREADS
    const uint32_t *f = features;
    for (Py_ssize_t d = 0; d < n_docs; d++, sig += k) {
        for (Py_ssize_t j = 0; j < k; j++)
            sig[j] = UINT32_MAX;
        for (int64_t i = 0; i < counts[d]; i++, f++) {
            const uint32_t h = *f;
            for (Py_ssize_t j = 0; j < k; j++) {
                const uint32_t v = a[j] * h + b[j];  /* unsigned: wraps mod 2**32 */
                sig[j] = v < sig[j] ? v : sig[j];
            }
        }
    }
    Py_END_ALLOW_THREADS
done:
    PyBuffer_Release(&fv);
    PyBuffer_Release(&cv);
    PyBuffer_Release(&av);
    PyBuffer_Release(&bv);
    return out;
}

static PyMethodDef methods[] = {
    {"signatures", signatures, METH_VARARGS, signatures_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_minhash",
    .m_doc = "MinHash signatures of a batch of documents (see minhash.c).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__minhash(void)
{
    PyObject *m = PyModule_Create(&module);
    /* the interface version that qckit_builtins.accelerated expects: bump it with every change of the
     * functions' arguments or results */
    if (m != NULL && PyModule_AddIntConstant(m, "API", 1) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
