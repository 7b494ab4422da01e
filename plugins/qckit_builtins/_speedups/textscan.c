/* qckit_builtins._textscan: per-text character and word counts for the heuristic filters.
 *
 * Each function takes a list of str and walks every text once, reading the str's own storage (no copy,
 * no encoding). The results are exactly those of the Python expressions named in each docstring; the
 * Python code in qckit_builtins.filters.heuristics is the reference and the fallback when this module
 * is not built. Whitespace is Py_UNICODE_ISSPACE and letters Py_UNICODE_ISALPHA: the very tests that
 * str.split() and str.isalpha() make.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* One text of the list: its storage, checked to be a str. */
typedef struct {
    int kind;
    const void *data;
    Py_ssize_t length;
} Text;

static int
text_at(PyObject *texts, Py_ssize_t i, Text *out)
{
    PyObject *item = PyList_GET_ITEM(texts, i);
    if (!PyUnicode_Check(item)) {
        PyErr_Format(PyExc_TypeError, "texts[%zd] is not a str", i);
        return -1;
    }
    if (PyUnicode_READY(item) < 0)
        return -1;
    out->kind = PyUnicode_KIND(item);
    out->data = PyUnicode_DATA(item);
    out->length = PyUnicode_GET_LENGTH(item);
    return 0;
}

static PyObject *
check_list(PyObject *texts)
{
    if (!PyList_Check(texts)) {
        PyErr_SetString(PyExc_TypeError, "texts must be a list of str");
        return NULL;
    }
    return PyList_New(PyList_GET_SIZE(texts));
}

PyDoc_STRVAR(non_alpha_space_doc,
"non_alpha_space(texts, /) -> list[int]\n\n"
"For each text, how many characters are neither str.isalpha() nor str.isspace().");

static PyObject *
non_alpha_space(PyObject *module, PyObject *texts)
{
    PyObject *out = check_list(texts);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(texts); i++) {
        Text t;
        if (text_at(texts, i, &t) < 0)
            goto error;
        Py_ssize_t bad = 0;
        for (Py_ssize_t j = 0; j < t.length; j++) {
            Py_UCS4 ch = PyUnicode_READ(t.kind, t.data, j);
            if (ch < 128) {
                bad += !((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z') && !Py_UNICODE_ISSPACE(ch);
            }
            else {
                bad += !Py_UNICODE_ISALPHA(ch) && !Py_UNICODE_ISSPACE(ch);
            }
        }
        PyObject *n = PyLong_FromSsize_t(bad);
        if (n == NULL)
            goto error;
        PyList_SET_ITEM(out, i, n);
    }
    return out;
error:
    Py_DECREF(out);
    return NULL;
}

static Py_ssize_t
count_words(const Text *t)
{
    Py_ssize_t words = 0;
    int in_word = 0;
    for (Py_ssize_t j = 0; j < t->length; j++) {
        int space = Py_UNICODE_ISSPACE(PyUnicode_READ(t->kind, t->data, j));
        words += !space && !in_word;
        in_word = !space;
    }
    return words;
}

PyDoc_STRVAR(word_counts_doc,
"word_counts(texts, /) -> list[int]\n\n"
"For each text, len(text.split()).");

static PyObject *
word_counts(PyObject *module, PyObject *texts)
{
    PyObject *out = check_list(texts);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(texts); i++) {
        Text t;
        if (text_at(texts, i, &t) < 0)
            goto error;
        PyObject *n = PyLong_FromSsize_t(count_words(&t));
        if (n == NULL)
            goto error;
        PyList_SET_ITEM(out, i, n);
    }
    return out;
error:
    Py_DECREF(out);
    return NULL;
}

/* -- distinct lower-cased words ----------------------------------------------------------------------- */

#define LOWER_SIZE 0x20000    /* the table covers U+0000 .. U+1FFFF; nothing above has a case */
#define LOWER_COMPLEX 0xFFFFFFFFu  /* lower() is not one character by itself: Python decides */

typedef struct {
    Py_ssize_t start;  /* the word's first character in the text */
    Py_ssize_t length;
    uint64_t hash;     /* 0: empty slot */
} Slot;

static inline Py_UCS4
lowered(const uint32_t *lower, Py_UCS4 ch)
{
    return ch < LOWER_SIZE ? lower[ch] : ch;
}

static int
same_word(const Text *t, const uint32_t *lower, Py_ssize_t a, Py_ssize_t b, Py_ssize_t length)
{
    for (Py_ssize_t k = 0; k < length; k++) {
        if (lowered(lower, PyUnicode_READ(t->kind, t->data, a + k))
            != lowered(lower, PyUnicode_READ(t->kind, t->data, b + k)))
            return 0;
    }
    return 1;
}

PyDoc_STRVAR(distinct_lower_words_doc,
"distinct_lower_words(texts, lower, /) -> (list[int], list[int])\n\n"
"For each text, len(text.lower().split()) and len(set(text.lower().split())); the second is -1\n"
"where a character of the text has no one-character lower case of its own (then ask Python).\n"
"``lower`` is the table of heuristics._lower_table(): uint32 per code point below U+20000.");

static PyObject *
distinct_lower_words(PyObject *module, PyObject *args)
{
    PyObject *texts;
    Py_buffer table;
    if (!PyArg_ParseTuple(args, "O!y*:distinct_lower_words", &PyList_Type, &texts, &table))
        return NULL;
    PyObject *words_out = NULL, *distinct_out = NULL;
    Slot *slots = NULL;
    size_t n_slots = 0;
    if (table.len != LOWER_SIZE * (Py_ssize_t)sizeof(uint32_t)) {
        PyErr_SetString(PyExc_ValueError, "lower must hold one uint32 per code point below U+20000");
        goto error;
    }
    const uint32_t *lower = (const uint32_t *)table.buf;
    Py_ssize_t n = PyList_GET_SIZE(texts);
    words_out = PyList_New(n);
    distinct_out = PyList_New(n);
    if (words_out == NULL || distinct_out == NULL)
        goto error;
    for (Py_ssize_t i = 0; i < n; i++) {
        Text t;
        if (text_at(texts, i, &t) < 0)
            goto error;
        Py_ssize_t words = count_words(&t), distinct = 0;
        size_t want = 8;
        while (want < 2 * (size_t)words)
            want <<= 1;
        if (want > n_slots) {
            Slot *grown = PyMem_Realloc(slots, want * sizeof(Slot));
            if (grown == NULL) {
                PyErr_NoMemory();
                goto error;
            }
            slots = grown;
            n_slots = want;
        }
        memset(slots, 0, want * sizeof(Slot));
        size_t mask = want - 1;
        Py_ssize_t j = 0;
        while (j < t.length && distinct >= 0) {
            Py_UCS4 ch = PyUnicode_READ(t.kind, t.data, j);
            if (Py_UNICODE_ISSPACE(ch)) {
                j++;
                continue;
            }
            Py_ssize_t start = j;
            uint64_t hash = 1469598103934665603ull;  /* FNV-1a over the lower-cased characters */
            for (; j < t.length; j++) {
                ch = PyUnicode_READ(t.kind, t.data, j);
                if (Py_UNICODE_ISSPACE(ch))
                    break;
                Py_UCS4 low = lowered(lower, ch);
                if (low == LOWER_COMPLEX) {
                    distinct = -1;
                    break;
                }
                hash = (hash ^ low) * 1099511628211ull;
            }
            if (distinct < 0)
                break;
            hash |= 1;  /* never 0, the empty slot */
            Py_ssize_t length = j - start;
            for (size_t s = (size_t)(hash >> 7) & mask;; s = (s + 1) & mask) {
                if (slots[s].hash == 0) {
                    slots[s].hash = hash;
                    slots[s].start = start;
                    slots[s].length = length;
                    distinct++;
                    break;
                }
                if (slots[s].hash == hash && slots[s].length == length
                    && same_word(&t, lower, slots[s].start, start, length))
                    break;
            }
        }
        PyObject *a = PyLong_FromSsize_t(words), *b = PyLong_FromSsize_t(distinct);
        if (a == NULL || b == NULL) {
            Py_XDECREF(a);
            Py_XDECREF(b);
            goto error;
        }
        PyList_SET_ITEM(words_out, i, a);
        PyList_SET_ITEM(distinct_out, i, b);
    }
    PyMem_Free(slots);
    PyBuffer_Release(&table);
    return Py_BuildValue("(NN)", words_out, distinct_out);
error:
    PyMem_Free(slots);
    PyBuffer_Release(&table);
    Py_XDECREF(words_out);
    Py_XDECREF(distinct_out);
    return NULL;
}

static PyMethodDef methods[] = {
    {"non_alpha_space", non_alpha_space, METH_O, non_alpha_space_doc},
    {"word_counts", word_counts, METH_O, word_counts_doc},
    {"distinct_lower_words", distinct_lower_words, METH_VARARGS, distinct_lower_words_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_textscan",
    "Per-text character and word counts for the heuristic filters (see textscan.c).", -1, methods,
};

PyMODINIT_FUNC
PyInit__textscan(void)
{
    return PyModule_Create(&module);
}
