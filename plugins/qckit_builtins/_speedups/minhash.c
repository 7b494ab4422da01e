/* qckit_builtins._minhash: MinHash signatures of a batch of documents given as feature hashes, and the
 * near-duplicate decisions of a verifying/tagging minhash_dedup.
 *
 * signatures:
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

/* MurmurHash3's 64-bit finalizer (dedup._fmix64) */
static inline uint64_t
fmix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

/* CRC-32 (zlib's: reflected polynomial 0xEDB88320, initial and final xor 0xFFFFFFFF), byte at a time */
static uint32_t crc_table[256];

static void
crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

static inline uint32_t
crc32_of(const unsigned char *p, Py_ssize_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (Py_ssize_t i = 0; i < n; i++)
        c = crc_table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

/* bytes.split()'s separators: ASCII whitespace */
static inline int
is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

#define MAX_GRAM 16

PyDoc_STRVAR(features_doc,
"features(keys, short_words, ngram, multipliers, /) -> (features, counts)\n\n"
"dedup.short_features of keys (a list of bytes, split on ASCII whitespace into words): uint32 feature\n"
"hashes, documents after documents, and the int64 count of each (bytes, native byte order).\n"
"multipliers: dedup._GRAM_MULTIPLIERS (uint64, 3 rows of 16).");

static PyObject *
features(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *keys;
    Py_ssize_t short_words, ngram;
    Py_buffer mv;
    if (!PyArg_ParseTuple(args, "O!nny*:features", &PyList_Type, &keys, &short_words, &ngram, &mv))
        return NULL;
    PyObject *out_f = NULL, *out_c = NULL, *result = NULL;
    const Py_ssize_t n_docs = PyList_GET_SIZE(keys);
    if (mv.len != 3 * MAX_GRAM * 8 || ngram < 1 || ngram > MAX_GRAM || short_words < ngram) {
        PyErr_SetString(PyExc_ValueError, "features: multipliers must be uint64[3, 16], 1 <= ngram <= 16, "
                                          "ngram <= short_words");
        goto done;
    }
    for (Py_ssize_t d = 0; d < n_docs; d++) {
        if (!PyBytes_Check(PyList_GET_ITEM(keys, d))) {
            PyErr_SetString(PyExc_TypeError, "features: keys must be bytes");
            goto done;
        }
    }
    if ((out_c = PyBytes_FromStringAndSize(NULL, n_docs * 8)) == NULL)
        goto done;
    int64_t *counts = (int64_t *)PyBytes_AS_STRING(out_c);
    /* pass 1: each document's words (in counts), and the features of all */
    Py_ssize_t total = 0;
    for (Py_ssize_t d = 0; d < n_docs; d++) {
        PyObject *key = PyList_GET_ITEM(keys, d);
        const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(key);
        const Py_ssize_t len = PyBytes_GET_SIZE(key);
        Py_ssize_t words = 0;
        for (Py_ssize_t i = 0; i < len; i++)
            words += !is_space(p[i]) && (i == 0 || is_space(p[i - 1]));
        counts[d] = words;
        /* a short document: its unigrams and bigrams; a longer one: its n-grams */
        total += words < short_words ? (words ? 2 * words - 1 : 0) : words - ngram + 1;
    }
    if ((out_f = PyBytes_FromStringAndSize(NULL, total * 4)) == NULL)
        goto done;
    uint32_t *f = (uint32_t *)PyBytes_AS_STRING(out_f);
    const uint64_t *mult = mv.buf;  /* [3][MAX_GRAM]: unigram, bigram and n-gram multipliers */
    /* pass 2: the features; counts become the features' counts */
    for (Py_ssize_t d = 0; d < n_docs; d++) {
        PyObject *key = PyList_GET_ITEM(keys, d);
        const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(key);
        const Py_ssize_t len = PyBytes_GET_SIZE(key);
        const int short_doc = counts[d] < short_words;
        uint32_t *next = f, *bigram = f + counts[d];  /* a short document: unigrams, then bigrams */
        uint64_t ring[MAX_GRAM];  /* the last ngram word hashes: word i at ring[i % ngram] */
        Py_ssize_t words = 0, i = 0;
        while (i < len) {
            while (i < len && is_space(p[i]))
                i++;
            if (i == len)
                break;
            Py_ssize_t j = i;
            while (j < len && !is_space(p[j]))
                j++;
            const uint64_t w = crc32_of(p + i, j - i);
            i = j;
            if (short_doc) {
                *next++ = (uint32_t)(fmix64(w * mult[0]) >> 32);
                if (words > 0) {
                    const uint64_t prev = ring[(words - 1) % ngram];
                    *bigram++ = (uint32_t)(fmix64(prev * mult[MAX_GRAM] + w * mult[MAX_GRAM + 1]) >> 32);
                }
            }
            ring[words % ngram] = w;
            words++;
            if (!short_doc && words >= ngram) {
                uint64_t gram = 0;  /* unsigned: wraps mod 2**64 as numpy's does */
                for (Py_ssize_t g = 0; g < ngram; g++)
                    gram += ring[(words - ngram + g) % ngram] * mult[2 * MAX_GRAM + g];
                *next++ = (uint32_t)(fmix64(gram) >> 32);
            }
        }
        counts[d] = short_doc ? (words ? 2 * words - 1 : 0) : words - ngram + 1;
        f += counts[d];
    }
    result = PyTuple_Pack(2, out_f, out_c);
done:
    Py_XDECREF(out_f);
    Py_XDECREF(out_c);
    PyBuffer_Release(&mv);
    return result;
}

/* The band table (dedup._BandTable): open addressing with linear probing over two arrays, keys uint64
 * (0 = an empty slot; a band hash of 0 is stored as 1) and values uint32 (a kept document's number).
 * A key's first slot is fmix64(key) & (capacity - 1); capacity is a power of two. */

/* A table larger than the CPU cache costs a memory access per probe: the slots of the next document's
 * bands (of the key a few places ahead) are asked for early, so that those accesses overlap. */
#if defined(__GNUC__) || defined(__clang__)
#define PREFETCH(p) __builtin_prefetch(p)
#else
#define PREFETCH(p) ((void)(p))
#endif
#define PREFETCH_AHEAD 16

static inline void
prefetch_slot(const uint64_t *tkeys, const uint32_t *tdocs, uint64_t mask, uint64_t key)
{
    const uint64_t s = fmix64(key) & mask;
    PREFETCH(tkeys + s);
    PREFETCH(tdocs + s);
}

/* the slot holding key, or the empty slot where it would go */
static inline Py_ssize_t
probe(const uint64_t *tkeys, uint64_t mask, uint64_t key)
{
    uint64_t s = fmix64(key) & mask;
    while (tkeys[s] != 0 && tkeys[s] != key)
        s = (s + 1) & mask;
    return (Py_ssize_t)s;
}

PyDoc_STRVAR(decide_doc,
"decide(table_keys, used, table_docs, kept_sketches, kept_serials, n_kept, keys, sketches, serials,\n"
"       min_matches, out, /) -> (n_kept, bands_added)\n\n"
"dedup.ClusterIndex.decide for one batch, in document order. table_keys (uint64, `used` of them\n"
"filled) and table_docs (uint32): the band table, writable, a power-of-two capacity with room for every\n"
"band of the batch; kept_sketches (uint8, num_perm per document) and kept_serials (int64): the kept\n"
"documents, writable, room for the batch; keys: the batch's band hashes (uint64, bands per document,\n"
"none 0); sketches (uint8, num_perm per document), serials (int64): the batch's; out (int64, writable):\n"
"per document, the serial of the earliest kept document (by serial) among the first kept documents of\n"
"its bands whose sketch agrees on at least min_matches values, else -1 (the document is then kept, and\n"
"its bands not yet in the table added).");

static PyObject *
decide(PyObject *Py_UNUSED(module), PyObject *args)
{
    Py_buffer tk, td, ks, kv, bk, bs, bv, ov;
    Py_ssize_t used, n_kept, min_matches;
    if (!PyArg_ParseTuple(args, "w*nw*w*w*ny*y*y*nw*:decide", &tk, &used, &td, &ks, &kv, &n_kept, &bk, &bs,
                          &bv, &min_matches, &ov))
        return NULL;
    PyObject *result = NULL;
    const Py_ssize_t cap = tk.len / 8, m = bv.len / 8;
    const Py_ssize_t perm = m ? bs.len / m : 0, bands = m ? bk.len / 8 / m : 0;
    const Py_ssize_t room = kv.len / 8;
    if (tk.len % 8 || td.len != cap * 4 || cap == 0 || (cap & (cap - 1)) || bv.len % 8 || ov.len != bv.len
        || (m && (bs.len % m || bk.len % (8 * m) || perm == 0 || bands == 0)) || kv.len % 8
        || (perm && ks.len != room * perm) || n_kept < 0 || n_kept + m > room || n_kept + m > UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "decide: inconsistent buffer sizes");
        goto done;
    }
    /* probing always ends on an empty slot only while the table has room for every band of the batch */
    if (used < 0 || used + m * bands >= cap) {
        PyErr_SetString(PyExc_ValueError, "decide: the band table has no room for this batch");
        goto done;
    }
    for (Py_ssize_t i = 0; i < m * bands; i++) {
        if (((const uint64_t *)bk.buf)[i] == 0) {
            PyErr_SetString(PyExc_ValueError, "decide: a band hash of 0 (stored as 1)");
            goto done;
        }
    }
    Py_ssize_t added = 0;
    Py_BEGIN_ALLOW_THREADS
    uint64_t *tkeys = tk.buf;
    uint32_t *tdocs = td.buf;
    uint8_t *kept = ks.buf;
    int64_t *kept_serials = kv.buf, *out = ov.buf;
    const uint64_t *keys = bk.buf, mask = (uint64_t)cap - 1;
    const uint8_t *sketches = bs.buf;
    const int64_t *serials = bv.buf;
    for (Py_ssize_t j = 0; j < bands; j++)
        prefetch_slot(tkeys, tdocs, mask, keys[j]);
    for (Py_ssize_t r = 0; r < m; r++) {
        const uint64_t *k = keys + r * bands;
        const uint8_t *sketch = sketches + r * perm;
        int64_t best = -1;
        if (r + 1 < m)
            for (Py_ssize_t j = 0; j < bands; j++)
                prefetch_slot(tkeys, tdocs, mask, k[bands + j]);
        for (Py_ssize_t j = 0; j < bands; j++) {
            const Py_ssize_t s = probe(tkeys, mask, k[j]);
            if (tkeys[s] == 0)
                continue;
            const uint32_t d = tdocs[s];
            const int64_t serial = kept_serials[d];
            if (best >= 0 && serial >= best)
                continue;  /* an earlier candidate already agrees (or this one was just compared) */
            const uint8_t *other = kept + (Py_ssize_t)d * perm;
            Py_ssize_t agree = 0;
            for (Py_ssize_t p = 0; p < perm; p++)
                agree += other[p] == sketch[p];
            if (agree >= min_matches)
                best = serial;
        }
        out[r] = best;
        if (best >= 0)
            continue;
        const uint32_t d = (uint32_t)n_kept++;
        memcpy(kept + (Py_ssize_t)d * perm, sketch, perm);
        kept_serials[d] = serials[r];
        for (Py_ssize_t j = 0; j < bands; j++) {
            const Py_ssize_t s = probe(tkeys, mask, k[j]);
            if (tkeys[s] == 0) {
                tkeys[s] = k[j];
                tdocs[s] = d;
                added++;
            }
        }
    }
    Py_END_ALLOW_THREADS
    result = Py_BuildValue("nn", n_kept, added);
done:
    PyBuffer_Release(&tk);
    PyBuffer_Release(&td);
    PyBuffer_Release(&ks);
    PyBuffer_Release(&kv);
    PyBuffer_Release(&bk);
    PyBuffer_Release(&bs);
    PyBuffer_Release(&bv);
    PyBuffer_Release(&ov);
    return result;
}

PyDoc_STRVAR(insert_doc,
"insert(table_keys, used, table_docs, keys, docs, /) -> added\n\n"
"Adds each band hash of keys (uint64, none 0) that is not in the band table yet, with its document of\n"
"docs (uint32): what dedup._BandTable.reserve does to move the bands into a larger table. The table\n"
"(decide's first three arguments) must have room for all of them.");

static PyObject *
insert(PyObject *Py_UNUSED(module), PyObject *args)
{
    Py_buffer tk, td, bk, bd;
    Py_ssize_t used;
    if (!PyArg_ParseTuple(args, "w*nw*y*y*:insert", &tk, &used, &td, &bk, &bd))
        return NULL;
    PyObject *result = NULL;
    const Py_ssize_t cap = tk.len / 8, n = bk.len / 8;
    if (tk.len % 8 || td.len != cap * 4 || cap == 0 || (cap & (cap - 1)) || bk.len % 8 || bd.len != n * 4) {
        PyErr_SetString(PyExc_ValueError, "insert: inconsistent buffer sizes");
        goto done;
    }
    if (used < 0 || used + n >= cap) {
        PyErr_SetString(PyExc_ValueError, "insert: the band table has no room for these bands");
        goto done;
    }
    const uint64_t *keys = bk.buf;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (keys[i] == 0) {
            PyErr_SetString(PyExc_ValueError, "insert: a band hash of 0 (stored as 1)");
            goto done;
        }
    }
    Py_ssize_t added = 0;
    Py_BEGIN_ALLOW_THREADS
    uint64_t *tkeys = tk.buf;
    uint32_t *tdocs = td.buf;
    const uint32_t *docs = bd.buf;
    const uint64_t mask = (uint64_t)cap - 1;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i + PREFETCH_AHEAD < n)
            prefetch_slot(tkeys, tdocs, mask, keys[i + PREFETCH_AHEAD]);
        const Py_ssize_t s = probe(tkeys, mask, keys[i]);
        if (tkeys[s] == 0) {
            tkeys[s] = keys[i];
            tdocs[s] = docs[i];
            added++;
        }
    }
    Py_END_ALLOW_THREADS
    result = PyLong_FromSsize_t(added);
done:
    PyBuffer_Release(&tk);
    PyBuffer_Release(&td);
    PyBuffer_Release(&bk);
    PyBuffer_Release(&bd);
    return result;
}

static PyMethodDef methods[] = {
    {"signatures", signatures, METH_VARARGS, signatures_doc},
    {"decide", decide, METH_VARARGS, decide_doc},
    {"insert", insert, METH_VARARGS, insert_doc},
    {"features", features, METH_VARARGS, features_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_minhash",
    .m_doc = "MinHash signatures and near-duplicate decisions of a batch of documents (see minhash.c).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__minhash(void)
{
    crc_init();
    PyObject *m = PyModule_Create(&module);
    /* the interface version that qckit_builtins.accelerated expects: bump it with every change of the
     * functions' arguments or results */
    if (m != NULL && PyModule_AddIntConstant(m, "API", 3) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
