/* qckit_builtins._textscan: one pass per text over a batch of texts, for the built-in components.
 *
 * Each function takes a list of str and walks every text once, reading the str's own storage (no copy,
 * no encoding): the counts of the heuristic filters (the reference and fallback is
 * qckit_builtins.filters.heuristics), the pre-checks that pick the texts a normalizer may change
 * (qckit_builtins._batch), the keys of exact deduplication (qckit_builtins.filters.dedup) and py3langid's
 * features (qckit_builtins.langmodel; these walk the texts' UTF-8 bytes). The results
 * are exactly those of the Python they replace, named in each docstring. Whitespace is Py_UNICODE_ISSPACE and letters Py_UNICODE_ISALPHA: the very tests that
 * str.split() and str.isalpha() make.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* Per BMP character: bit 0 Py_UNICODE_ISSPACE, bit 1 Py_UNICODE_ISALPHA (filled once at import; above
 * the BMP the two are asked each time). */
#define IS_SPACE 1
#define IS_ALPHA 2
static unsigned char bmp_flags[0x10000];

static inline int
is_space(Py_UCS4 ch)
{
    return ch < 0x10000 ? bmp_flags[ch] & IS_SPACE : Py_UNICODE_ISSPACE(ch);
}

static inline int
is_alpha_or_space(Py_UCS4 ch)
{
    return ch < 0x10000 ? bmp_flags[ch] != 0 : Py_UNICODE_ISALPHA(ch) || Py_UNICODE_ISSPACE(ch);
}

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

/* Run BODY for each character ``ch`` of the text, with a loop of its own per storage kind. */
#define FOR_EACH_CHAR(t, BODY)                                                      \
    do {                                                                            \
        Py_ssize_t n_ = (t)->length;                                                \
        if ((t)->kind == PyUnicode_1BYTE_KIND) {                                    \
            const Py_UCS1 *p_ = (const Py_UCS1 *)(t)->data;                         \
            for (Py_ssize_t j_ = 0; j_ < n_; j_++) { Py_UCS4 ch = p_[j_]; BODY; }   \
        }                                                                           \
        else if ((t)->kind == PyUnicode_2BYTE_KIND) {                               \
            const Py_UCS2 *p_ = (const Py_UCS2 *)(t)->data;                         \
            for (Py_ssize_t j_ = 0; j_ < n_; j_++) { Py_UCS4 ch = p_[j_]; BODY; }   \
        }                                                                           \
        else {                                                                      \
            const Py_UCS4 *p_ = (const Py_UCS4 *)(t)->data;                         \
            for (Py_ssize_t j_ = 0; j_ < n_; j_++) { Py_UCS4 ch = p_[j_]; BODY; }   \
        }                                                                           \
    } while (0)

static int
get_table(Py_buffer *view, Py_ssize_t size, const char *what)
{
    if (view->len != size) {
        PyErr_Format(PyExc_ValueError, "%s must hold %zd bytes, not %zd", what, size, view->len);
        return -1;
    }
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

/* One count per text: ``count(text)`` for each text of the list. */
static PyObject *
counts_of(PyObject *texts, Py_ssize_t (*count)(const Text *))
{
    PyObject *out = check_list(texts);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(texts); i++) {
        Text t;
        PyObject *n;
        if (text_at(texts, i, &t) < 0 || (n = PyLong_FromSsize_t(count(&t))) == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, n);
    }
    return out;
}

static Py_ssize_t
count_non_alpha_space(const Text *t)
{
    Py_ssize_t bad = 0;
    FOR_EACH_CHAR(t, bad += !is_alpha_or_space(ch));
    return bad;
}

static Py_ssize_t
count_words(const Text *t)
{
    Py_ssize_t words = 0;
    int in_word = 0;
    FOR_EACH_CHAR(t, {
        int space = is_space(ch);
        words += !space && !in_word;
        in_word = !space;
    });
    return words;
}

PyDoc_STRVAR(non_alpha_space_doc,
"non_alpha_space(texts, /) -> list[int]\n\n"
"For each text, how many characters are neither str.isalpha() nor str.isspace().");

static PyObject *
non_alpha_space(PyObject *Py_UNUSED(module), PyObject *texts)
{
    return counts_of(texts, count_non_alpha_space);
}

PyDoc_STRVAR(word_counts_doc,
"word_counts(texts, /) -> list[int]\n\n"
"For each text, len(text.split()).");

static PyObject *
word_counts(PyObject *Py_UNUSED(module), PyObject *texts)
{
    return counts_of(texts, count_words);
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

/* A word's hash: rotate and xor over its lower-cased characters (cheap; equal hashes are compared), mixed
 * once at the end. */
#define HASH_START 0x9E3779B97F4A7C15ull

/* Put the word at ``start`` into the table unless an equal one is there; return 1 if it was new. */
static inline int
insert_word(Slot *slots, size_t mask, const Text *t, const uint32_t *lower, uint64_t hash, Py_ssize_t start,
            Py_ssize_t length)
{
    hash *= 0xBF58476D1CE4E5B9ull;
    hash ^= hash >> 31;
    hash |= 1;  /* never 0, the empty slot */
    for (size_t s = (size_t)(hash >> 7) & mask;; s = (s + 1) & mask) {
        if (slots[s].hash == 0) {
            slots[s].hash = hash;
            slots[s].start = start;
            slots[s].length = length;
            return 1;
        }
        if (slots[s].hash == hash && slots[s].length == length && same_word(t, lower, slots[s].start, start, length))
            return 0;
    }
}

PyDoc_STRVAR(repetitive_doc,
"repetitive(texts, lower, min_ratio, /) -> list[bool | None]\n\n"
"For each text, with words = text.lower().split(): bool(words) and len(set(words)) / len(words) <\n"
"min_ratio; None where a character of the text has no one-character lower case of its own (then ask\n"
"Python). ``lower`` is heuristics._lower_table(): uint32 per code point below U+20000. A text stops being\n"
"read once its distinct words reach the ratio (more words can only add distinct ones).");

static PyObject *
repetitive(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *texts;
    Py_buffer table;
    double min_ratio;
    if (!PyArg_ParseTuple(args, "O!y*d:repetitive", &PyList_Type, &texts, &table, &min_ratio))
        return NULL;
    PyObject *out = NULL;
    Slot *slots = NULL;
    size_t n_slots = 0;
    if (get_table(&table, LOWER_SIZE * (Py_ssize_t)sizeof(uint32_t), "lower") < 0)
        goto error;
    const uint32_t *lower = (const uint32_t *)table.buf;
    Py_ssize_t n = PyList_GET_SIZE(texts);
    if ((out = PyList_New(n)) == NULL)
        goto error;
    for (Py_ssize_t i = 0; i < n; i++) {
        Text t;
        if (text_at(texts, i, &t) < 0)
            goto error;
        Py_ssize_t words = count_words(&t), distinct = 0;
        /* enough distinct words to stay: the smallest count whose ratio is not below min_ratio */
        Py_ssize_t enough = words ? (Py_ssize_t)ceil(min_ratio * (double)words) : 0;
        while (enough > 0 && (double)(enough - 1) / (double)words >= min_ratio)
            enough--;
        while (enough < words && (double)enough / (double)words < min_ratio)
            enough++;
        size_t want = 8;
        while (want < 2 * (size_t)enough + 2)
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
        Py_ssize_t start = 0;
        uint64_t hash = 0;
        int in_word = 0, ask_python = 0;
        if (words && distinct < enough) {
            FOR_EACH_CHAR(&t, {
                if (is_space(ch)) {
                    if (in_word) {
                        distinct += insert_word(slots, mask, &t, lower, hash, start, j_ - start);
                        if (distinct >= enough)
                            break;
                    }
                    in_word = 0;
                }
                else {
                    if (!in_word) {
                        in_word = 1;
                        start = j_;
                        hash = HASH_START;
                    }
                    Py_UCS4 low = lowered(lower, ch);
                    if (low == LOWER_COMPLEX) {
                        ask_python = 1;
                        break;
                    }
                    hash = ((hash << 5) | (hash >> 59)) ^ low;
                }
            });
            if (in_word && !ask_python && distinct < enough)
                distinct += insert_word(slots, mask, &t, lower, hash, start, t.length - start);
        }
        PyObject *verdict;
        if (ask_python)
            verdict = Py_None;
        else
            verdict = words && (double)distinct / (double)words < min_ratio ? Py_True : Py_False;
        PyList_SET_ITEM(out, i, Py_NewRef(verdict));
    }
    PyMem_Free(slots);
    PyBuffer_Release(&table);
    return out;
error:
    PyMem_Free(slots);
    PyBuffer_Release(&table);
    Py_XDECREF(out);
    return NULL;
}

/* -- the normalizers' pre-checks ------------------------------------------------------------------- */

/* The flags of a character in a uint8 table over the BMP; above it, those of its two UTF-16 surrogates
 * (as numpy sees them in qckit_builtins._batch.code_units). */
static inline unsigned
flags_of(const unsigned char *table, Py_UCS4 ch)
{
    if (ch < 0x10000)
        return table[ch];
    ch -= 0x10000;
    return table[0xD800 + (ch >> 10)] | table[0xDC00 + (ch & 0x3FF)];
}

static int
append_index(PyObject *out, Py_ssize_t i)
{
    PyObject *n = PyLong_FromSsize_t(i);
    if (n == NULL)
        return -1;
    int rc = PyList_Append(out, n);
    Py_DECREF(n);
    return rc;
}

PyDoc_STRVAR(text_flags_doc,
"text_flags(texts, table, /) -> bytes\n\n"
"For each text, the OR of table[c] over its characters c (``table``: 65536 uint8 flags over the BMP; a\n"
"character above it has the flags of its two UTF-16 surrogates); 0xFF for a text holding U+0000.");

static PyObject *
text_flags(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *texts;
    Py_buffer view;
    if (!PyArg_ParseTuple(args, "O!y*:text_flags", &PyList_Type, &texts, &view))
        return NULL;
    PyObject *out = NULL;
    Py_ssize_t n = PyList_GET_SIZE(texts);
    if (get_table(&view, 0x10000, "table") < 0 || (out = PyBytes_FromStringAndSize(NULL, n)) == NULL)
        goto error;
    const unsigned char *table = view.buf;
    unsigned char *flags = (unsigned char *)PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < n; i++) {
        Text t;
        if (text_at(texts, i, &t) < 0)
            goto error;
        unsigned found = 0;
        if (t.kind == PyUnicode_1BYTE_KIND) {  /* the first 256 entries stay in the L1 cache */
            const Py_UCS1 *p = (const Py_UCS1 *)t.data;
            for (Py_ssize_t j = 0; j < t.length; j++)
                found |= p[j] ? table[p[j]] : 0xFF;
        }
        else {
            FOR_EACH_CHAR(&t, found |= ch ? flags_of(table, ch) : 0xFF);
        }
        flags[i] = (unsigned char)found;
    }
    PyBuffer_Release(&view);
    return out;
error:
    PyBuffer_Release(&view);
    Py_XDECREF(out);
    return NULL;
}

PyDoc_STRVAR(containing_doc,
"containing(texts, literals, /) -> list[int]\n\n"
"Indices of the texts that contain one of ``literals`` (a tuple of str).");

/* Whether one of the literals ``w[0..n)`` occurs at position ``j`` of ``t``. */
static inline int
literal_at(const Text *t, Py_ssize_t j, const Text *w, Py_ssize_t n)
{
    for (Py_ssize_t k = 0; k < n; k++) {
        if (w[k].length > t->length - j)
            continue;
        Py_ssize_t m = 0;
        while (m < w[k].length && PyUnicode_READ(t->kind, t->data, j + m) == PyUnicode_READ(w[k].kind, w[k].data, m))
            m++;
        if (m == w[k].length)
            return 1;
    }
    return 0;
}

static PyObject *
containing(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *texts, *literals;
    if (!PyArg_ParseTuple(args, "O!O!:containing", &PyList_Type, &texts, &PyTuple_Type, &literals))
        return NULL;
    Py_ssize_t n_literals = PyTuple_GET_SIZE(literals);
    Text *wanted = PyMem_Calloc(n_literals ? n_literals : 1, sizeof(Text));
    PyObject *out = NULL;
    unsigned char heads[256] = {0};
    int wide_head = 0;  /* a literal starting above U+00FF: checked at every character */
    if (wanted == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t k = 0; k < n_literals; k++) {
        PyObject *literal = PyTuple_GET_ITEM(literals, k);
        if (!PyUnicode_Check(literal) || PyUnicode_READY(literal) < 0 || PyUnicode_GET_LENGTH(literal) == 0) {
            PyErr_Format(PyExc_ValueError, "literals[%zd] is not a non-empty str", k);
            goto error;
        }
        wanted[k].kind = PyUnicode_KIND(literal);
        wanted[k].data = PyUnicode_DATA(literal);
        wanted[k].length = PyUnicode_GET_LENGTH(literal);
        Py_UCS4 head = PyUnicode_READ(wanted[k].kind, wanted[k].data, 0);
        if (head < 256)
            heads[head] = 1;
        else
            wide_head = 1;
    }
    if ((out = PyList_New(0)) == NULL)
        goto error;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(texts); i++) {
        Text t;
        if (text_at(texts, i, &t) < 0)
            goto error;
        int found = 0;
        /* one pass for all the literals: a character that starts none is one table look-up */
        FOR_EACH_CHAR(&t, {
            if ((ch < 256 ? heads[ch] : wide_head) && literal_at(&t, j_, wanted, n_literals)) {
                found = 1;
                break;
            }
        });
        if (found && append_index(out, i) < 0)
            goto error;
    }
    PyMem_Free(wanted);
    return out;
error:
    PyMem_Free(wanted);
    Py_XDECREF(out);
    return NULL;
}

PyDoc_STRVAR(whitespace_candidates_doc,
"whitespace_candidates(texts, table, odd_mask, space_mask, /) -> list[int]\n\n"
"Indices of the texts that hold a character flagged ``odd_mask`` in ``table`` (as in flagged()) or\n"
"U+0000, two U+0020 in a row, or a first or last character flagged ``space_mask``.");

static PyObject *
whitespace_candidates(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *texts;
    Py_buffer view;
    unsigned int odd_mask, space_mask;
    if (!PyArg_ParseTuple(args, "O!y*II:whitespace_candidates", &PyList_Type, &texts, &view, &odd_mask,
                          &space_mask))
        return NULL;
    PyObject *out = NULL;
    if (get_table(&view, 0x10000, "table") < 0 || (out = PyList_New(0)) == NULL)
        goto error;
    const unsigned char *table = view.buf;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(texts); i++) {
        Text t;
        if (text_at(texts, i, &t) < 0)
            goto error;
        unsigned found = 0;
        if (t.length) {
            found = (flags_of(table, PyUnicode_READ(t.kind, t.data, 0))
                     | flags_of(table, PyUnicode_READ(t.kind, t.data, t.length - 1))) & space_mask;
        }
        Py_UCS4 previous = 0;
        FOR_EACH_CHAR(&t, {
            found |= (flags_of(table, ch) & odd_mask) | (ch == 0) | (ch == ' ' && previous == ' ');
            previous = ch;
        });
        if (found && append_index(out, i) < 0)
            goto error;
    }
    PyBuffer_Release(&view);
    return out;
error:
    PyBuffer_Release(&view);
    Py_XDECREF(out);
    return NULL;
}

/* -- exact-dedup fingerprints: BLAKE2b with an 8-byte digest (RFC 7693) ------------------------------ */

static const uint64_t BLAKE2B_IV[8] = {
    0x6A09E667F3BCC908ull, 0xBB67AE8584CAA73Bull, 0x3C6EF372FE94F82Bull, 0xA54FF53A5F1D36F1ull,
    0x510E527FADE682D1ull, 0x9B05688C2B3E6C1Full, 0x1F83D9ABFB41BD6Bull, 0x5BE0CD19137E2179ull,
};

static const unsigned char BLAKE2B_SIGMA[10][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15}, {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4}, {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13}, {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11}, {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5}, {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
};

static inline uint64_t
rotr64(uint64_t x, int n)
{
    return (x >> n) | (x << (64 - n));
}

static inline uint64_t
load64(const unsigned char *p)
{
#if PY_LITTLE_ENDIAN
    uint64_t x;
    memcpy(&x, p, 8);
    return x;
#else
    uint64_t x = 0;
    for (int i = 7; i >= 0; i--)
        x = (x << 8) | p[i];
    return x;
#endif
}

#define B2B_G(a, b, c, d, x, y)              \
    do {                                     \
        v[a] = v[a] + v[b] + (x);            \
        v[d] = rotr64(v[d] ^ v[a], 32);      \
        v[c] = v[c] + v[d];                  \
        v[b] = rotr64(v[b] ^ v[c], 24);      \
        v[a] = v[a] + v[b] + (y);            \
        v[d] = rotr64(v[d] ^ v[a], 16);      \
        v[c] = v[c] + v[d];                  \
        v[b] = rotr64(v[b] ^ v[c], 63);      \
    } while (0)

static void
blake2b_compress(uint64_t h[8], const unsigned char block[128], uint64_t counter, int last)
{
    uint64_t v[16], m[16];
    for (int i = 0; i < 8; i++) {
        v[i] = h[i];
        v[i + 8] = BLAKE2B_IV[i];
    }
    v[12] ^= counter;  /* inputs stay below 2**64 bytes: the counter's high word is 0 */
    if (last)
        v[14] = ~v[14];
    for (int i = 0; i < 16; i++)
        m[i] = load64(block + 8 * i);
#define B2B_ROUND(r)                                     \
    do {                                                 \
        const unsigned char *s = BLAKE2B_SIGMA[(r) % 10]; \
        B2B_G(0, 4, 8, 12, m[s[0]], m[s[1]]);            \
        B2B_G(1, 5, 9, 13, m[s[2]], m[s[3]]);            \
        B2B_G(2, 6, 10, 14, m[s[4]], m[s[5]]);           \
        B2B_G(3, 7, 11, 15, m[s[6]], m[s[7]]);           \
        B2B_G(0, 5, 10, 15, m[s[8]], m[s[9]]);           \
        B2B_G(1, 6, 11, 12, m[s[10]], m[s[11]]);         \
        B2B_G(2, 7, 8, 13, m[s[12]], m[s[13]]);          \
        B2B_G(3, 4, 9, 14, m[s[14]], m[s[15]]);          \
    } while (0)
    /* unrolled: the message schedule of every round is then a constant */
    B2B_ROUND(0);
    B2B_ROUND(1);
    B2B_ROUND(2);
    B2B_ROUND(3);
    B2B_ROUND(4);
    B2B_ROUND(5);
    B2B_ROUND(6);
    B2B_ROUND(7);
    B2B_ROUND(8);
    B2B_ROUND(9);
    B2B_ROUND(10);
    B2B_ROUND(11);
#undef B2B_ROUND
    for (int i = 0; i < 8; i++)
        h[i] ^= v[i] ^ v[i + 8];
}

/* hashlib.blake2b(data, digest_size=8).digest() read as a little-endian integer: the first word of h. */
static uint64_t
blake2b_64(const unsigned char *data, size_t size)
{
    uint64_t h[8];
    memcpy(h, BLAKE2B_IV, sizeof h);
    h[0] ^= 0x01010000ull ^ 8;  /* depth 1, fanout 1, no key, 8-byte digest */
    size_t done = 0;
    while (size - done > 128) {
        blake2b_compress(h, data + done, done + 128, 0);
        done += 128;
    }
    unsigned char block[128] = {0};
    memcpy(block, data + done, size - done);
    blake2b_compress(h, block, size, 1);
    return h[0];
}

static PyObject *
as_little_endian_bytes(const uint64_t *values, Py_ssize_t n)
{
    PyObject *out = PyBytes_FromStringAndSize(NULL, n * 8);
    if (out == NULL)
        return NULL;
    unsigned char *p = (unsigned char *)PyBytes_AS_STRING(out);
    for (Py_ssize_t i = 0; i < n; i++)
        for (int b = 0; b < 8; b++)
            *p++ = (unsigned char)(values[i] >> (8 * b));
    return out;
}

PyDoc_STRVAR(blake2b_64_doc,
"blake2b_64(keys, /) -> bytes\n\n"
"For each bytes of ``keys``, hashlib.blake2b(key, digest_size=8).digest(), concatenated.");

static PyObject *
blake2b_64_many(PyObject *Py_UNUSED(module), PyObject *keys)
{
    if (!PyList_Check(keys)) {
        PyErr_SetString(PyExc_TypeError, "keys must be a list of bytes");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(keys);
    uint64_t *hashes = PyMem_Malloc((n ? n : 1) * sizeof(uint64_t));
    if (hashes == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *key = PyList_GET_ITEM(keys, i);
        if (!PyBytes_Check(key)) {
            PyMem_Free(hashes);
            PyErr_Format(PyExc_TypeError, "keys[%zd] is not bytes", i);
            return NULL;
        }
        hashes[i] = blake2b_64((const unsigned char *)PyBytes_AS_STRING(key), (size_t)PyBytes_GET_SIZE(key));
    }
    PyObject *out = as_little_endian_bytes(hashes, n);
    PyMem_Free(hashes);
    return out;
}

/* -- exact-dedup keys ------------------------------------------------------------------------------- */

PyDoc_STRVAR(dedup_keys_doc,
"dedup_keys(texts, table, risky, /) -> list[bytes | None]\n\n"
"For each text, dedup.dedup_keys's key: every character mapped through ``table`` (65536 uint16 over the\n"
"BMP, 0x20 for a word break), runs of 0x20 collapsed to one and dropped at both ends, as UTF-8; None\n"
"where a character maps to ``risky``, is above the BMP or is U+0000 (that text goes through Python).");

/* Write the dedup key of ``t`` into ``buffer`` (3 bytes per character at most); its size, or -1 where a
 * character maps to ``risky``, is above the BMP or is U+0000. */
static Py_ssize_t
dedup_key(const Text *t, const uint16_t *table, unsigned risky, char *buffer)
{
    /* Branch-free around word breaks (they come every few characters, in no pattern a branch predictor
     * learns): a pending space and an ASCII character are always stored, and kept by advancing size. */
    size_t size = 0;
    unsigned pending = 0;  /* a word break after something written */
    FOR_EACH_CHAR(t, {
        unsigned code = ch < 0x10000 && ch != 0 ? table[ch] : risky;
        if (code == risky)
            return -1;
        unsigned is_break = code == 0x20;
        buffer[size] = ' ';
        size += pending & !is_break;
        pending = is_break & (size > 0);
        if (code < 0x80) {
            buffer[size] = (char)code;
            size += !is_break;
        }
        else if (code < 0x800) {
            buffer[size++] = (char)(0xC0 | (code >> 6));
            buffer[size++] = (char)(0x80 | (code & 0x3F));
        }
        else {
            buffer[size++] = (char)(0xE0 | (code >> 12));
            buffer[size++] = (char)(0x80 | ((code >> 6) & 0x3F));
            buffer[size++] = (char)(0x80 | (code & 0x3F));
        }
    });
    return (Py_ssize_t)size;
}

/* A buffer for the key of a text of ``length`` characters. */
static int
key_buffer(char **buffer, size_t *capacity, Py_ssize_t length)
{
    if ((size_t)length * 3 + 1 <= *capacity)  /* the key, and the byte stored after it */
        return 0;
    size_t want = (size_t)length * 3 + 64;
    char *grown = PyMem_Realloc(*buffer, want);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *buffer = grown;
    *capacity = want;
    return 0;
}

static PyObject *
dedup_keys(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *texts;
    Py_buffer view;
    unsigned int risky;
    if (!PyArg_ParseTuple(args, "O!y*I:dedup_keys", &PyList_Type, &texts, &view, &risky))
        return NULL;
    PyObject *out = NULL;
    char *buffer = NULL;
    size_t capacity = 0;
    if (get_table(&view, 0x10000 * (Py_ssize_t)sizeof(uint16_t), "table") < 0)
        goto error;
    Py_ssize_t n = PyList_GET_SIZE(texts);
    if ((out = PyList_New(n)) == NULL)
        goto error;
    for (Py_ssize_t i = 0; i < n; i++) {
        Text t;
        if (text_at(texts, i, &t) < 0 || key_buffer(&buffer, &capacity, t.length) < 0)
            goto error;
        Py_ssize_t size = dedup_key(&t, view.buf, risky, buffer);
        PyObject *key = size < 0 ? Py_NewRef(Py_None) : PyBytes_FromStringAndSize(buffer, size);
        if (key == NULL)
            goto error;
        PyList_SET_ITEM(out, i, key);
    }
    PyMem_Free(buffer);
    PyBuffer_Release(&view);
    return out;
error:
    PyMem_Free(buffer);
    PyBuffer_Release(&view);
    Py_XDECREF(out);
    return NULL;
}

/* -- py3langid's features ----------------------------------------------------------------------------- */

PyDoc_STRVAR(langid_features_doc,
"langid_features(texts, nextmove, rowbase, output, n_features, /) -> (bounds, ids, counts)\n\n"
"py3langid.langid.visit_counts for each bytes of ``texts``: from state 0, the DFA walk\n"
"``state = nextmove[rowbase[state] + byte]`` counting feature ``output[state]`` wherever it is >= 0.\n"
"``nextmove`` and ``rowbase`` are uint32 buffers, ``output`` an int32 buffer (one value per state);\n"
"a value out of range raises ValueError. Text k's distinct features, in the order of their first\n"
"visit (the Counter's order), are ids[bounds[k]:bounds[k + 1]] and their counts alike: ``bounds``\n"
"holds n + 1 int64, ``ids`` and ``counts`` int32, as bytes in native order.");

static PyObject *
langid_features(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *texts, *result = NULL;
    Py_buffer next = {0}, rows = {0}, out = {0};
    Py_ssize_t n_features;
    int64_t *bounds = NULL;
    int32_t *ids = NULL, *counts = NULL;
    Py_ssize_t *slot = NULL;
    if (!PyArg_ParseTuple(args, "O!y*y*y*n:langid_features", &PyList_Type, &texts, &next, &rows, &out,
                          &n_features))
        return NULL;
    const uint32_t *nextmove = next.buf, *rowbase = rows.buf;
    const int32_t *output = out.buf;
    Py_ssize_t n_next = next.len / 4, n_states = rows.len / 4;
    Py_ssize_t n = PyList_GET_SIZE(texts), total = 0;
    if (next.len % 4 || rows.len % 4 || out.len != rows.len || n_features < 0) {
        PyErr_SetString(PyExc_ValueError, "langid_features: tables of mismatched sizes");
        goto done;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *item = PyList_GET_ITEM(texts, k);
        if (!PyBytes_Check(item)) {
            PyErr_Format(PyExc_TypeError, "texts[%zd] is not bytes", k);
            goto done;
        }
        total += PyBytes_GET_SIZE(item);
    }
    /* a text has at most one feature per byte */
    bounds = PyMem_Malloc((n + 1) * sizeof(int64_t));
    ids = PyMem_Malloc((total + 1) * sizeof(int32_t));
    counts = PyMem_Malloc((total + 1) * sizeof(int32_t));
    slot = PyMem_Malloc((n_features + 1) * sizeof(Py_ssize_t));
    if (bounds == NULL || ids == NULL || counts == NULL || slot == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t f = 0; f < n_features; f++)
        slot[f] = -1;  /* where the current text's count of feature f is, -1 before its first visit */
    Py_ssize_t used = 0;
    bounds[0] = 0;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *item = PyList_GET_ITEM(texts, k);
        const unsigned char *text = (const unsigned char *)PyBytes_AS_STRING(item);
        Py_ssize_t size = PyBytes_GET_SIZE(item), first = used;
        uint32_t state = 0;
        for (Py_ssize_t j = 0; j < size; j++) {
            if (state >= (uint64_t)n_states || rowbase[state] + (Py_ssize_t)text[j] >= n_next)
                goto out_of_range;
            state = nextmove[rowbase[state] + text[j]];
            if (state >= (uint64_t)n_states)
                goto out_of_range;
            int32_t f = output[state];
            if (f < 0)
                continue;
            if (f >= n_features)
                goto out_of_range;
            if (slot[f] < 0) {
                slot[f] = used;
                ids[used] = f;
                counts[used++] = 1;
            }
            else {
                counts[slot[f]]++;
            }
        }
        for (Py_ssize_t i = first; i < used; i++)
            slot[ids[i]] = -1;
        bounds[k + 1] = used;
    }
    result = Py_BuildValue("(y#y#y#)", (const char *)bounds, (n + 1) * (Py_ssize_t)sizeof(int64_t),
                           (const char *)ids, used * (Py_ssize_t)sizeof(int32_t), (const char *)counts,
                           used * (Py_ssize_t)sizeof(int32_t));
    goto done;
out_of_range:
    PyErr_SetString(PyExc_ValueError, "langid_features: a table value is out of range");
done:
    PyMem_Free(bounds);
    PyMem_Free(ids);
    PyMem_Free(counts);
    PyMem_Free(slot);
    PyBuffer_Release(&next);
    PyBuffer_Release(&rows);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"non_alpha_space", non_alpha_space, METH_O, non_alpha_space_doc},
    {"word_counts", word_counts, METH_O, word_counts_doc},
    {"repetitive", repetitive, METH_VARARGS, repetitive_doc},
    {"text_flags", text_flags, METH_VARARGS, text_flags_doc},
    {"containing", containing, METH_VARARGS, containing_doc},
    {"whitespace_candidates", whitespace_candidates, METH_VARARGS, whitespace_candidates_doc},
    {"dedup_keys", dedup_keys, METH_VARARGS, dedup_keys_doc},
    {"blake2b_64", blake2b_64_many, METH_O, blake2b_64_doc},
    {"langid_features", langid_features, METH_VARARGS, langid_features_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_textscan",
    .m_doc = "One pass per text over a batch of texts, for the built-in components (see textscan.c).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__textscan(void)
{
    for (Py_UCS4 ch = 0; ch < 0x10000; ch++)
        bmp_flags[ch] = (Py_UNICODE_ISSPACE(ch) ? IS_SPACE : 0) | (Py_UNICODE_ISALPHA(ch) ? IS_ALPHA : 0);
    PyObject *m = PyModule_Create(&module);
    /* the interface version that qckit_builtins.accelerated expects: bump it with every change of the
     * functions' arguments or results, so that a stale build is left unused instead of misused */
    if (m != NULL && PyModule_AddIntConstant(m, "API", 4) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
