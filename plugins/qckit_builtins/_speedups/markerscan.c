/* qckit_builtins._markerscan: MarkerList.find for a whole batch of texts, for the dialect tagger.
 *
 * matcher(...) builds, once per marker list, a Matcher that holds the list's vocabulary, stems and
 * phrases in C tables; Matcher.find_all(texts) then walks every text once, reading the str's own storage
 * (no copy, no encoding), and Matcher.tag_all(docs, ...) does the same for documents, setting their
 * metrics and meta as QuebecMarkers.drop_reason does. Their results are exactly those of MarkerList.find
 * in qckit_builtins.filters.dialect, which is the reference and the fallback when this module is not
 * built: each character is folded with the tables of dialect._fold_tables() (what fold_words does to
 * it), the tokens are the runs of [a-z0-9] of the folded text and find's loop runs over them. A text
 * with a character the tables leave to Python (one that folds to three or more characters, a lone
 * surrogate) or one above U+FFFF (NFKD can make letters of them) is left to MarkerList.find. Word
 * counts use the fold table's whitespace (0x20), which is exactly str.split()'s. No table has a fixed
 * size: they grow with the list.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* The codes of dialect._fold_tables(): letters are [0-9a-z] (>= 0x30), everything below separates
 * tokens except these three. */
#define FOLD_DELETE 0x22  /* folds to nothing: the letters around it join */
#define FOLD_TWO 0x23     /* folds to the two characters first[ch] second[ch] */
#define FOLD_OTHER 0x24   /* anything else: Python decides */
#define FOLD_SIZE 0x10000 /* the tables cover the BMP */

#define HASH_STEP 1099511628211ull  /* FNV-1a's, for the letters after the first 8 */

/* -- growable arrays ---------------------------------------------------------------------------------- */

static int
grow(void **array, Py_ssize_t *capacity, Py_ssize_t need, size_t item)
{
    if (need <= *capacity)
        return 0;
    Py_ssize_t want = *capacity ? *capacity : 16;
    while (want < need)
        want *= 2;
    void *grown = PyMem_Realloc(*array, (size_t)want * item);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *array = grown;
    *capacity = want;
    return 0;
}

/* -- exact hash tables of ASCII words ------------------------------------------------------------------ */

typedef struct {
    Py_ssize_t offset;  /* its letters in Table.chars */
    Py_ssize_t length;
} Word;

typedef struct {
    uint64_t hash;  /* 0: empty slot */
    int32_t value;
    int32_t word;   /* in Table.words */
} Slot;

typedef struct {
    Slot *slots;
    size_t mask;
    int shift;
    uint64_t *filter;  /* bit set over more hash bits than the slots: most look-ups end there */
    int filter_shift;
    char *chars;
    Py_ssize_t n_chars, chars_capacity;
    Word *words;
    Py_ssize_t count, words_capacity;
} Table;

/* A word's first min(length, 8) letters as one number, the first letter in the low byte. */
static inline uint64_t
head_of(const char *letters, Py_ssize_t length)
{
    uint64_t head = 0;
    for (Py_ssize_t k = 0; k < length && k < 8; k++)
        head |= (uint64_t)(unsigned char)letters[k] << (8 * k);
    return head;
}

/* The head of the word's first ``length`` letters, from the word's head. */
static inline uint64_t
head_prefix(uint64_t head, Py_ssize_t length)
{
    return length >= 8 ? head : head & ((1ull << (8 * length)) - 1);
}

#define LONG_WORD_BIT (1ull << 63) /* set in the hash of every word longer than 8 letters, never in a head */

/* The hash of a word from its head (head_of): a word of up to 8 letters is its head (never 0: letters
 * are not 0), so equal hashes are equal words; FNV-1a steps over the letters after the first 8 for
 * longer ones. */
static inline uint64_t
word_hash(uint64_t head, const char *letters, Py_ssize_t length)
{
    if (length <= 8)
        return head;
    uint64_t hash = head;
    for (Py_ssize_t k = 8; k < length; k++)
        hash = (hash ^ (unsigned char)letters[k]) * HASH_STEP;
    return hash | LONG_WORD_BIT;
}

static inline uint64_t
mixed(uint64_t hash)
{
    return hash * 0x9E3779B97F4A7C15ull;
}

static inline int
same_letters(const char *a, const char *b, Py_ssize_t length)
{
    for (Py_ssize_t k = 0; k < length; k++) {
        if (a[k] != b[k])
            return 0;
    }
    return 1;
}

/* The value of the word, or -1 where it is not in the table. */
static inline int32_t
table_get(const Table *table, const char *letters, Py_ssize_t length, uint64_t hash)
{
    uint64_t mix = mixed(hash);
    size_t bit = (size_t)(mix >> table->filter_shift);
    if (!((table->filter[bit >> 6] >> (bit & 63)) & 1))
        return -1;
    for (size_t s = (size_t)(mix >> table->shift);; s = (s + 1) & table->mask) {
        const Slot *slot = &table->slots[s];
        if (slot->hash == 0)
            return -1;
        if (slot->hash == hash) {
            if (length <= 8)
                return slot->value;  /* the same head */
            const Word *word = &table->words[slot->word];
            if (word->length == length && same_letters(table->chars + word->offset, letters, length))
                return slot->value;
        }
    }
}

/* A table with room for ``count`` words at a load of at most 1/2. */
static int
table_init(Table *table, Py_ssize_t count)
{
    int bits = 3;
    while (((Py_ssize_t)1 << bits) < 2 * count)
        bits++;
    table->slots = PyMem_Calloc((size_t)1 << bits, sizeof(Slot));
    if (table->slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    table->mask = ((size_t)1 << bits) - 1;
    table->shift = 64 - bits;
    bits += 5;  /* 32 bits per slot, 64 per word at least */
    table->filter = PyMem_Calloc((size_t)1 << (bits - 6), sizeof(uint64_t));
    if (table->filter == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    table->filter_shift = 64 - bits;
    return 0;
}

/* Adds a word; 0 if it was there already (the value stays), 1 if added, -1 on error. */
static int
table_add_letters(Table *table, const char *letters, Py_ssize_t length, const char *what, int32_t value)
{
    uint64_t hash = word_hash(head_of(letters, length), letters, length);
    if (table_get(table, letters, length, hash) >= 0)
        return 0;
    if (table->count >= INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "too many %s", what);
        return -1;
    }
    if (grow((void **)&table->chars, &table->chars_capacity, table->n_chars + length, 1) < 0
        || grow((void **)&table->words, &table->words_capacity, table->count + 1, sizeof(Word)) < 0)
        return -1;
    memcpy(table->chars + table->n_chars, letters, (size_t)length);
    table->words[table->count] = (Word){table->n_chars, length};
    size_t bit = (size_t)(mixed(hash) >> table->filter_shift);
    table->filter[bit >> 6] |= 1ull << (bit & 63);
    size_t s = (size_t)(mixed(hash) >> table->shift);
    while (table->slots[s].hash != 0)
        s = (s + 1) & table->mask;
    table->slots[s] = (Slot){hash, value, (int32_t)table->count};
    table->n_chars += length;
    table->count++;
    return 1;
}

static int
check_ascii(PyObject *word, const char *what)
{
    if (!PyUnicode_Check(word) || !PyUnicode_IS_ASCII(word) || PyUnicode_GET_LENGTH(word) == 0) {
        PyErr_Format(PyExc_ValueError, "%s must be non-empty ASCII str, not %R", what, word);
        return -1;
    }
    return 0;
}

/* table_add_letters for an ASCII str. */
static int
table_add(Table *table, PyObject *word, const char *what, int32_t value)
{
    if (check_ascii(word, what) < 0)
        return -1;
    return table_add_letters(table, (const char *)PyUnicode_DATA(word), PyUnicode_GET_LENGTH(word), what,
                             value);
}

static void
table_free(Table *table)
{
    PyMem_Free(table->slots);
    PyMem_Free(table->filter);
    PyMem_Free(table->chars);
    PyMem_Free(table->words);
}

/* -- the words of up to 8 letters by their heads, in a cuckoo table ------------------------------------- */

/* Each head is in one of its two slots, so a look-up is two loads and two compares, no branch: most
 * tokens are such words or like them, and which is which is what a branch cannot guess. */
typedef struct {
    uint64_t *keys;   /* a head, or 0 (no word's head): empty */
    int32_t *values;
    int shift;        /* 64 - log2(slots) */
} Heads;

#define HEADS_FIRST 0x9E3779B97F4A7C15ull
#define HEADS_SECOND 0xC2B2AE3D27D4EB4Full
#define HEADS_KICKS 512

static inline size_t
heads_slot(const Heads *heads, uint64_t head, int second)
{
    return (size_t)((head * (second ? HEADS_SECOND : HEADS_FIRST)) >> heads->shift);
}

/* The value of the word of that head, or -1. */
static inline int32_t
heads_get(const Heads *heads, uint64_t head)
{
    size_t a = heads_slot(heads, head, 0), b = heads_slot(heads, head, 1);
    int32_t value = heads->keys[a] == head ? heads->values[a] : -1;
    return heads->keys[b] == head ? heads->values[b] : value;
}

/* Places every (head, value) of the arrays; 0 if they do not fit (in HEADS_KICKS moves each). */
static int
heads_place(Heads *heads, const uint64_t *keys, const int32_t *values, Py_ssize_t count)
{
    for (Py_ssize_t i = 0; i < count; i++) {
        uint64_t key = keys[i];
        int32_t value = values[i];
        size_t slot = heads_slot(heads, key, 0);
        if (heads->keys[slot] != 0)
            slot = heads_slot(heads, key, 1);
        for (int kick = 0; heads->keys[slot] != 0; kick++) {
            if (kick == HEADS_KICKS)
                return 0;
            uint64_t out_key = heads->keys[slot];  /* move the occupant to its other slot */
            int32_t out_value = heads->values[slot];
            heads->keys[slot] = key;
            heads->values[slot] = value;
            key = out_key;
            value = out_value;
            size_t first = heads_slot(heads, key, 0);
            slot = slot == first ? heads_slot(heads, key, 1) : first;
        }
        heads->keys[slot] = key;
        heads->values[slot] = value;
    }
    return 1;
}

/* The table of the (head, value) pairs: at most 1/4 full to start with, twice as large until all fit. */
static int
heads_init(Heads *heads, const uint64_t *keys, const int32_t *values, Py_ssize_t count)
{
    int bits = 4;
    while (((Py_ssize_t)1 << bits) < 4 * count)
        bits++;
    for (;; bits++) {
        if (bits > 40) {
            PyErr_SetString(PyExc_ValueError, "cannot place the words in a table");
            return -1;
        }
        PyMem_Free(heads->keys);
        PyMem_Free(heads->values);
        heads->keys = PyMem_Calloc((size_t)1 << bits, sizeof(uint64_t));
        heads->values = PyMem_Calloc((size_t)1 << bits, sizeof(int32_t));
        if (heads->keys == NULL || heads->values == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        heads->shift = 64 - bits;
        if (heads_place(heads, keys, values, count))
            return 0;
    }
}

static void
heads_free(Heads *heads)
{
    PyMem_Free(heads->keys);
    PyMem_Free(heads->values);
}

/* -- the matcher ----------------------------------------------------------------------------------------- */

typedef struct {
    Py_ssize_t start;  /* its codes in Matcher.phrase_codes */
    Py_ssize_t length;
    int32_t label;     /* -1: a shield */
} Phrase;

typedef struct {
    PyObject_HEAD
    Table words;              /* vocabulary word → code */
    Heads heads;              /* the same for the words of up to 8 letters */
    int32_t *single;          /* code → label id of the word alone, or -1 */
    Py_ssize_t n_codes;
    Table stems;              /* stem → label id */
    Table stem_keys;          /* the first min_stem letters of every stem */
    Py_ssize_t min_stem, max_stem; /* the shortest and longest stem's length; 0: no stems */
    uint8_t *stem_length;     /* [length]: 1 if a stem has that length (up to max_stem) */
    Py_ssize_t *first_phrase; /* code → its phrases: first_phrase[code] .. first_phrase[code + 1] */
    Phrase *phrases;          /* grouped by first code, in the list's order within a group */
    int32_t *phrase_codes;
    uint64_t *second_bits;    /* code → bit (c & 63) set for the second code c of each of its phrases
                               * (all bits for a one-word phrase): a token whose next token's bit is
                               * not set starts none of them */
    PyObject *labels;         /* tuple of str: label id → entry; ids sort like entries */
    uint8_t fold[FOLD_SIZE], first[FOLD_SIZE], second[FOLD_SIZE];
} Matcher;

static void
matcher_dealloc(Matcher *self)
{
    table_free(&self->words);
    heads_free(&self->heads);
    table_free(&self->stems);
    PyMem_Free(self->single);
    table_free(&self->stem_keys);
    PyMem_Free(self->stem_length);
    PyMem_Free(self->first_phrase);
    PyMem_Free(self->second_bits);
    PyMem_Free(self->phrases);
    PyMem_Free(self->phrase_codes);
    Py_XDECREF(self->labels);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* A label id from a Python int: -1 (none, where allowed) or an index of labels. */
static int
label_of(PyObject *value, Py_ssize_t n_labels, int none_ok, int32_t *out)
{
    Py_ssize_t id = PyLong_AsSsize_t(value);
    if (id == -1 && PyErr_Occurred())
        return -1;
    if (id < (none_ok ? -1 : 0) || id >= n_labels) {
        PyErr_Format(PyExc_ValueError, "label id %zd is out of range", id);
        return -1;
    }
    *out = (int32_t)id;
    return 0;
}

static int
copy_table(uint8_t *to, PyObject *from, const char *name)
{
    Py_buffer view;
    if (PyObject_GetBuffer(from, &view, PyBUF_SIMPLE) < 0)
        return -1;
    int ok = view.len == FOLD_SIZE;
    if (ok)
        memcpy(to, view.buf, FOLD_SIZE);
    PyBuffer_Release(&view);
    if (!ok) {
        PyErr_Format(PyExc_ValueError, "%s must hold one uint8 per BMP code point", name);
        return -1;
    }
    return 0;
}

static int
add_words(Matcher *self, PyObject *words, PyObject *single, Py_ssize_t n_labels)
{
    Py_ssize_t n = PyList_GET_SIZE(words);
    if (PyList_GET_SIZE(single) != n) {
        PyErr_SetString(PyExc_ValueError, "words and single must have the same length");
        return -1;
    }
    if (n > INT32_MAX - 1) {
        PyErr_SetString(PyExc_ValueError, "too many words");
        return -1;
    }
    if (table_init(&self->words, n) < 0)
        return -1;
    self->single = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(int32_t));
    if (self->single == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->n_codes = n;
    for (Py_ssize_t code = 0; code < n; code++) {
        int added = table_add(&self->words, PyList_GET_ITEM(words, code), "words", (int32_t)code);
        if (added < 0)
            return -1;
        if (!added) {
            PyErr_Format(PyExc_ValueError, "words[%zd] is there twice", code);
            return -1;
        }
        if (label_of(PyList_GET_ITEM(single, code), n_labels, 1, &self->single[code]) < 0)
            return -1;
    }
    uint64_t *keys = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(uint64_t));
    int32_t *codes = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(int32_t));
    Py_ssize_t n_short = 0;
    int status = -1;
    if (keys == NULL || codes == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t code = 0; code < n; code++) {
        const Word *word = &self->words.words[code];
        if (word->length <= 8) {
            keys[n_short] = head_of(self->words.chars + word->offset, word->length);
            codes[n_short++] = (int32_t)code;
        }
    }
    status = heads_init(&self->heads, keys, codes, n_short);
done:
    PyMem_Free(keys);
    PyMem_Free(codes);
    return status;
}

static int
add_stems(Matcher *self, PyObject *stems, Py_ssize_t n_labels)
{
    Py_ssize_t n = PyList_GET_SIZE(stems);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(stems, i);
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2) {
            PyErr_SetString(PyExc_TypeError, "stems must be (stem, label id) pairs");
            return -1;
        }
        PyObject *stem = PyTuple_GET_ITEM(item, 0);
        if (check_ascii(stem, "stems") < 0)
            return -1;
        Py_ssize_t length = PyUnicode_GET_LENGTH(stem);
        if (!self->min_stem || length < self->min_stem)
            self->min_stem = length;
        if (length > self->max_stem)
            self->max_stem = length;
    }
    self->stem_length = PyMem_Calloc((size_t)self->max_stem + 1, 1);
    if (self->stem_length == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (table_init(&self->stems, n) < 0 || table_init(&self->stem_keys, n) < 0)
        return -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(stems, i), *stem = PyTuple_GET_ITEM(item, 0);
        int32_t label;
        if (label_of(PyTuple_GET_ITEM(item, 1), n_labels, 0, &label) < 0)
            return -1;
        /* the first of equal stems wins, as in stem_tuple */
        if (table_add(&self->stems, stem, "stems", label) < 0
            || table_add_letters(&self->stem_keys, (const char *)PyUnicode_DATA(stem), self->min_stem,
                                 "stems", 0) < 0)
            return -1;
        self->stem_length[PyUnicode_GET_LENGTH(stem)] = 1;
    }
    return 0;
}

static int
add_phrases(Matcher *self, PyObject *phrases, Py_ssize_t n_labels)
{
    Py_ssize_t n = PyList_GET_SIZE(phrases), n_codes = self->n_codes, total = 0;
    self->first_phrase = PyMem_Calloc((size_t)n_codes + 2, sizeof(Py_ssize_t));
    self->second_bits = PyMem_Calloc((size_t)n_codes + 1, sizeof(uint64_t));
    self->phrases = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(Phrase));
    if (self->first_phrase == NULL || self->second_bits == NULL || self->phrases == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(phrases, i), *codes;
        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2 || !PyTuple_Check(PyTuple_GET_ITEM(item, 0))
            || PyTuple_GET_SIZE(PyTuple_GET_ITEM(item, 0)) == 0) {
            PyErr_SetString(PyExc_TypeError, "phrases must be (non-empty tuple of codes, label id) pairs");
            return -1;
        }
        codes = PyTuple_GET_ITEM(item, 0);
        total += PyTuple_GET_SIZE(codes);
    }
    self->phrase_codes = PyMem_Malloc((size_t)(total ? total : 1) * sizeof(int32_t));
    int32_t *codes_of = PyMem_Malloc((size_t)(total ? total : 1) * sizeof(int32_t));
    Phrase *listed = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(Phrase));
    int status = -1;
    if (self->phrase_codes == NULL || codes_of == NULL || listed == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    /* read them in the list's order, count them per first code, then place each group's in order */
    Py_ssize_t at = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(phrases, i), *codes = PyTuple_GET_ITEM(item, 0);
        listed[i].start = at;
        listed[i].length = PyTuple_GET_SIZE(codes);
        if (label_of(PyTuple_GET_ITEM(item, 1), n_labels, 1, &listed[i].label) < 0)
            goto done;
        for (Py_ssize_t k = 0; k < listed[i].length; k++) {
            Py_ssize_t code = PyLong_AsSsize_t(PyTuple_GET_ITEM(codes, k));
            if (code == -1 && PyErr_Occurred())
                goto done;
            if (code < 0 || code >= n_codes) {
                PyErr_Format(PyExc_ValueError, "phrase code %zd is out of range", code);
                goto done;
            }
            codes_of[at++] = (int32_t)code;
        }
        int32_t first_code = codes_of[listed[i].start];
        self->first_phrase[first_code + 2]++;
        self->second_bits[first_code] |= listed[i].length > 1 ? 1ull << (codes_of[listed[i].start + 1] & 63)
                                                              : ~0ull;
    }
    for (Py_ssize_t code = 0; code < n_codes; code++)
        self->first_phrase[code + 2] += self->first_phrase[code + 1];
    /* first_phrase[code + 1] is now where the group of code starts; it ends up at code + 1's start */
    Py_ssize_t placed = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t slot = self->first_phrase[codes_of[listed[i].start] + 1]++;
        self->phrases[slot] = (Phrase){placed, listed[i].length, listed[i].label};
        memcpy(self->phrase_codes + placed, codes_of + listed[i].start,
               (size_t)listed[i].length * sizeof(int32_t));
        placed += listed[i].length;
    }
    status = 0;
done:
    PyMem_Free(codes_of);
    PyMem_Free(listed);
    return status;
}

static PyTypeObject MatcherType;

PyDoc_STRVAR(matcher_doc,
"matcher(words, single, stems, phrases, labels, fold, first, second, /) -> Matcher\n\n"
"The C form of a MarkerList. ``words``: the vocabulary (list of ASCII str: every word of\n"
"MarkerList.words and of every phrase); a word's code is its index. ``single``: for each code, the\n"
"label id of the word alone (its own entry, else the stem it starts with), or -1. ``stems``: (stem,\n"
"label id) in MarkerList.stem_tuple's order. ``phrases``: (tuple of codes, label id or -1 for a\n"
"shield) in the order find tries them. ``labels``: the entries (tuple of str) by label id.\n"
"``fold``, ``first``, ``second``: the tables of dialect._fold_tables() (bytes, 65536 each).");

static PyObject *
matcher_new(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *words, *single, *stems, *phrases, *labels, *fold, *first, *second;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!OOO:matcher", &PyList_Type, &words, &PyList_Type, &single,
                          &PyList_Type, &stems, &PyList_Type, &phrases, &PyTuple_Type, &labels, &fold,
                          &first, &second))
        return NULL;
    Py_ssize_t n_labels = PyTuple_GET_SIZE(labels);
    for (Py_ssize_t i = 0; i < n_labels; i++) {
        if (!PyUnicode_Check(PyTuple_GET_ITEM(labels, i))) {
            PyErr_SetString(PyExc_TypeError, "labels must be a tuple of str");
            return NULL;
        }
    }
    if (n_labels > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "too many labels");
        return NULL;
    }
    Matcher *self = PyObject_New(Matcher, &MatcherType);
    if (self == NULL)
        return NULL;
    /* everything after the header, so that dealloc frees only what was allocated */
    memset((char *)self + sizeof(PyObject), 0, sizeof(Matcher) - sizeof(PyObject));
    Py_INCREF(labels);
    self->labels = labels;
    if (copy_table(self->fold, fold, "fold") < 0 || copy_table(self->first, first, "first") < 0
        || copy_table(self->second, second, "second") < 0 || add_words(self, words, single, n_labels) < 0
        || add_stems(self, stems, n_labels) < 0 || add_phrases(self, phrases, n_labels) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

/* -- scanning -------------------------------------------------------------------------------------------- */

/* What find_all keeps from text to text: room for a text's letters and tokens. */
typedef struct {
    char *letters;
    Py_ssize_t capacity;
    int32_t *codes, *labels;  /* per token (a run of tokens that are neither is kept as one) */
    Py_ssize_t n_tokens, tokens_capacity, labels_capacity;
    Py_ssize_t n_folded;      /* every token: len(fold_words(text)) */
    int hit;                  /* a token has a code or a label */
} Scan;

/* The label of the longest stem the token starts with (the first of stem_tuple's), or -1. */
static int32_t
stem_label(const Matcher *m, const char *letters, Py_ssize_t length, uint64_t head)
{
    Py_ssize_t shortest = m->min_stem;
    if (length < shortest
        || table_get(&m->stem_keys, letters, shortest,
                     word_hash(head_prefix(head, shortest), letters, shortest)) < 0)
        return -1;  /* most tokens */
    Py_ssize_t longest = length < m->max_stem ? length : m->max_stem;
    int32_t label = -1;
    uint64_t hash = head;  /* word_hash's before LONG_WORD_BIT, from 8 letters on */
    /* from 9 letters at most, so that the hash steps over every letter after the eighth (no stem is
     * shorter than ``shortest``: the lengths before it look nothing up) */
    for (Py_ssize_t k = shortest < 9 ? shortest : 9; k <= longest; k++) {
        if (k > 8)
            hash = (hash ^ (unsigned char)letters[k - 1]) * HASH_STEP;
        if (m->stem_length[k]) {
            uint64_t prefix = k <= 8 ? head_prefix(head, k) : hash | LONG_WORD_BIT;
            int32_t found = table_get(&m->stems, letters, k, prefix);
            label = found >= 0 ? found : label;
        }
    }
    return label;
}

/* head_of the ``length`` letters at ``letters``, which has at least 8 bytes to read. */
static inline uint64_t
head_at(const char *letters, Py_ssize_t length)
{
    uint64_t head;
    memcpy(&head, letters, 8);  /* little-endian: the first letter in the low byte */
    return length >= 8 ? head : head & ((1ull << (8 * length)) - 1);
}

/* Ends the token of the ``length`` letters at ``start`` (the caller's locals: a token that is neither
 * word nor stem, like the token before, is not kept: it neither starts a phrase nor counts). */
#define END_TOKEN()                                                                                      \
    do {                                                                                                 \
        if (length) {                                                                                    \
            uint64_t head = head_at(start, length);                                                      \
            int32_t code = length <= 8 ? heads_get(&m->heads, head)                                      \
                                       : table_get(&m->words, start, length, word_hash(head, start, length)); \
            int32_t label = code >= 0 ? m->single[code]                                                  \
                            : min_stem && length >= min_stem ? stem_label(m, start, length, head)        \
                                          : -1;                                                          \
            int plain = code < 0 && label < 0;                                                           \
            if (!plain || !last_plain) {                                                                 \
                codes[n_tokens] = code;                                                                  \
                labels[n_tokens] = label;                                                                \
                n_tokens++;                                                                              \
            }                                                                                            \
            last_plain = plain;                                                                          \
            hit |= !plain;                                                                               \
            n_folded++;                                                                                  \
            start += length;                                                                             \
            length = 0;                                                                                  \
        }                                                                                                \
    } while (0)

/* Tokens of one text into ``s`` and its word count into ``words``: 1 if Python must decide, 0 done,
 * -1 on error. Inlined once per str kind (see scan_text), so that PyUnicode_READ is one load. The
 * buffers are sized for the text first, so that the loop keeps everything in locals. */
static inline Py_ALWAYS_INLINE int
scan_kind(const Matcher *m, Scan *s, const int kind, const void *data, Py_ssize_t n, Py_ssize_t *words)
{
    /* a character gives at most 2 letters and ends at most one token; head_at reads 8 bytes */
    if (grow((void **)&s->letters, &s->capacity, 2 * n + 8, 1) < 0
        || grow((void **)&s->codes, &s->tokens_capacity, n + 1, sizeof(int32_t)) < 0
        || grow((void **)&s->labels, &s->labels_capacity, n + 1, sizeof(int32_t)) < 0)
        return -1;
    const uint8_t *fold = m->fold;
    char *start = s->letters;  /* the current token's first letter: tokens are not kept, only letters */
    int32_t *codes = s->codes, *labels = s->labels;
    Py_ssize_t n_words = 0, length = 0, n_tokens = 0, min_stem = m->min_stem;
    Py_ssize_t n_folded = 0;
    int in_word = 0, last_plain = 0, hit = 0;
    for (Py_ssize_t j = 0; j < n; j++) {
        Py_UCS4 ch = PyUnicode_READ(kind, data, j);
        if (kind == PyUnicode_4BYTE_KIND && ch >= FOLD_SIZE)
            return 1;
        unsigned int folded = fold[ch];
        if (folded >= 0x30) {
            n_words += !in_word;
            in_word = 1;
            start[length++] = (char)folded;
            continue;
        }
        int space = folded == 0x20;  /* the fold table's whitespace is exactly Py_UNICODE_ISSPACE */
        n_words += !space && !in_word;
        in_word = !space;
        if (folded == FOLD_DELETE) {
            continue;
        }
        else if (folded == FOLD_TWO) {
            unsigned int two[2] = {m->first[ch], m->second[ch]};
            for (int k = 0; k < 2; k++) {
                if (two[k] >= 0x30)
                    start[length++] = (char)two[k];
                else
                    END_TOKEN();
            }
        }
        else if (folded == FOLD_OTHER) {
            return 1;
        }
        else {
            END_TOKEN();
        }
    }
    END_TOKEN();
    codes[n_tokens] = -1;  /* after the last token, for match_tokens (no token is empty: n_tokens <= n) */
    s->n_tokens = n_tokens;
    s->hit = hit;
    s->n_folded = n_folded;
    *words = n_words;
    return 0;
}

#undef END_TOKEN

static int
scan_text(const Matcher *m, Scan *s, int kind, const void *data, Py_ssize_t length, Py_ssize_t *words)
{
    switch (kind) {
    case PyUnicode_1BYTE_KIND:
        return scan_kind(m, s, PyUnicode_1BYTE_KIND, data, length, words);
    case PyUnicode_2BYTE_KIND:
        return scan_kind(m, s, PyUnicode_2BYTE_KIND, data, length, words);
    default:
        return scan_kind(m, s, PyUnicode_4BYTE_KIND, data, length, words);
    }
}

/* find's loop over the tokens of ``s``: the marker count, and the distinct label ids into ``found``
 * (``seen[id] == stamp``: already there). With ``flagged`` (one byte per label id), the count of the
 * markers whose label is flagged goes to ``*n_flagged``. */
static Py_ssize_t
match_tokens(const Matcher *m, const Scan *s, Py_ssize_t *seen, Py_ssize_t stamp, int32_t *found,
             Py_ssize_t *n_found, const unsigned char *flagged, Py_ssize_t *n_flagged)
{
    Py_ssize_t count = 0, i = 0, n = s->n_tokens;
    while (i < n) {
        int32_t code = s->codes[i], label = s->labels[i];
        Py_ssize_t size = 1;
        /* s->codes[n] is -1 (see scan_kind) */
        if (code >= 0 && (m->second_bits[code] >> ((uint32_t)s->codes[i + 1] & 63) & 1)) {
            for (Py_ssize_t p = m->first_phrase[code]; p < m->first_phrase[code + 1]; p++) {
                const Phrase *phrase = &m->phrases[p];
                const int32_t *codes = m->phrase_codes + phrase->start;
                Py_ssize_t k = 1;  /* codes[0] is the code */
                if (i + phrase->length > n)
                    continue;
                while (k < phrase->length && s->codes[i + k] == codes[k])
                    k++;
                if (k == phrase->length) {
                    label = phrase->label;
                    size = phrase->length;
                    break;
                }
            }
        }
        if (label >= 0) {
            count++;
            if (flagged != NULL && flagged[label])
                (*n_flagged)++;
            if (seen[label] != stamp) {
                seen[label] = stamp;
                found[(*n_found)++] = label;
            }
        }
        i += size;
    }
    return count;
}

static PyObject *
labels_list(const Matcher *m, int32_t *found, Py_ssize_t n_found)
{
    for (Py_ssize_t a = 1; a < n_found; a++) {  /* few: insertion sort */
        int32_t id = found[a];
        Py_ssize_t b = a;
        for (; b > 0 && found[b - 1] > id; b--)
            found[b] = found[b - 1];
        found[b] = id;
    }
    PyObject *list = PyList_New(n_found);
    if (list == NULL)
        return NULL;
    for (Py_ssize_t k = 0; k < n_found; k++) {
        PyObject *label = PyTuple_GET_ITEM(m->labels, found[k]);
        Py_INCREF(label);
        PyList_SET_ITEM(list, k, label);
    }
    return list;
}

/* What find_all and tag_all need per call: the scan's buffers and the label bookkeeping. */
typedef struct {
    Scan s;
    Py_ssize_t *seen;  /* label id → the stamp of the last text that found it */
    int32_t *ids;      /* the distinct label ids of the current text */
} Batch;

static int
batch_init(const Matcher *m, Batch *b)
{
    size_t n_labels = (size_t)PyTuple_GET_SIZE(m->labels);
    memset(b, 0, sizeof(*b));
    b->seen = PyMem_Calloc(n_labels + 1, sizeof(Py_ssize_t));
    b->ids = PyMem_Malloc((n_labels + 1) * sizeof(int32_t));
    if (b->seen == NULL || b->ids == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static void
batch_free(Batch *b)
{
    PyMem_Free(b->s.letters);
    PyMem_Free(b->s.codes);
    PyMem_Free(b->s.labels);
    PyMem_Free(b->seen);
    PyMem_Free(b->ids);
}

/* MarkerList.find for the ``k``th text of a batch: 1 if Python must decide, 0 done (``*count``,
 * ``*n_words`` and the new list ``*entries`` set), -1 on error. */
static int
find_one(const Matcher *m, Batch *b, PyObject *text, Py_ssize_t k, Py_ssize_t *count, Py_ssize_t *n_words,
         PyObject **entries)
{
    if (!PyUnicode_Check(text)) {
        PyErr_Format(PyExc_TypeError, "texts[%zd] is not a str", k);
        return -1;
    }
    if (PyUnicode_READY(text) < 0)
        return -1;
    int status = scan_text(m, &b->s, PyUnicode_KIND(text), PyUnicode_DATA(text), PyUnicode_GET_LENGTH(text),
                           n_words);
    if (status)
        return status;
    Py_ssize_t n_found = 0;
    *count = b->s.hit ? match_tokens(m, &b->s, b->seen, k + 1, b->ids, &n_found, NULL, NULL) : 0;
    *entries = labels_list(m, b->ids, n_found);
    return *entries == NULL ? -1 : 0;
}

PyDoc_STRVAR(find_all_doc,
"find_all(texts, /) -> (counts, words, found, slow)\n\n"
"MarkerList.find for each text of a list of str: counts[k], words[k], found[k] are find(texts[k])'s\n"
"markers, words and (new list of) distinct entries, except for the indices in ``slow``: those texts\n"
"have a character this module cannot fold (found[k] is None there, counts[k] and words[k] 0); ask\n"
"MarkerList.find.");

static PyObject *
find_all(Matcher *self, PyObject *texts)
{
    if (!PyList_Check(texts)) {
        PyErr_SetString(PyExc_TypeError, "texts must be a list of str");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(texts);
    PyObject *counts = PyList_New(n), *words = PyList_New(n), *found = PyList_New(n);
    PyObject *slow = PyList_New(0);
    Batch b;
    if (batch_init(self, &b) < 0 || counts == NULL || words == NULL || found == NULL || slow == NULL)
        goto error;
    for (Py_ssize_t k = 0; k < n; k++) {
        Py_ssize_t n_words = 0, count = 0;
        PyObject *entries = NULL;
        int status = find_one(self, &b, PyList_GET_ITEM(texts, k), k, &count, &n_words, &entries);
        if (status < 0)
            goto error;
        if (status) {
            PyObject *index = PyLong_FromSsize_t(k);
            if (index == NULL || PyList_Append(slow, index) < 0) {
                Py_XDECREF(index);
                goto error;
            }
            Py_DECREF(index);
            n_words = 0;
            Py_INCREF(Py_None);
            entries = Py_None;
        }
        PyList_SET_ITEM(found, k, entries);
        PyObject *a = PyLong_FromSsize_t(count), *c = PyLong_FromSsize_t(n_words);
        if (a == NULL || c == NULL) {
            Py_XDECREF(a);
            Py_XDECREF(c);
            goto error;
        }
        PyList_SET_ITEM(counts, k, a);
        PyList_SET_ITEM(words, k, c);
    }
    batch_free(&b);
    return Py_BuildValue("(NNNN)", counts, words, found, slow);
error:
    batch_free(&b);
    Py_XDECREF(counts);
    Py_XDECREF(words);
    Py_XDECREF(found);
    Py_XDECREF(slow);
    return NULL;
}

/* Appends the index k to a list. */
static int
append_index(PyObject *list, Py_ssize_t k)
{
    PyObject *index = PyLong_FromSsize_t(k);
    if (index == NULL)
        return -1;
    int status = PyList_Append(list, index);
    Py_DECREF(index);
    return status;
}

/* dict[key] = float(value), with the shared floats of small values. */
static int
set_float(PyObject *dict, PyObject *key, Py_ssize_t value, PyObject **small, Py_ssize_t n_small)
{
    if (value < n_small)
        return PyDict_SetItem(dict, key, small[value]);
    PyObject *number = PyFloat_FromDouble((double)value);
    if (number == NULL)
        return -1;
    int status = PyDict_SetItem(dict, key, number);
    Py_DECREF(number);
    return status;
}

/* The dict held in attribute ``name`` of ``doc``, as a new reference. */
static PyObject *
dict_attribute(PyObject *doc, PyObject *name)
{
    PyObject *dict = PyObject_GetAttr(doc, name);
    if (dict != NULL && !PyDict_Check(dict)) {
        PyErr_Format(PyExc_TypeError, "%R of a document is not a dict", name);
        Py_CLEAR(dict);
    }
    return dict;
}

#define N_SMALL 1024 /* the floats 0.0 … 1023.0 are made once per call */

PyDoc_STRVAR(tag_all_doc,
"tag_all(docs, keys, min_density, /) -> (below, slow)\n\n"
"QuebecMarkers.drop_reason for each document of a list (objects with ``text``, ``metrics`` and ``meta``):\n"
"find(doc.text)'s markers, words and 1.0 or 0.0 (a marker or not) go into doc.metrics under keys[0],\n"
"keys[1], keys[2] (floats, in that order), its new list of distinct entries into doc.meta[keys[3]].\n"
"``below``: the indices of the documents under ``min_density`` markers per 1000 words (none when it\n"
"is 0). The documents of ``slow`` (see find_all) are left untouched: ask drop_reason.");

static PyObject *
tag_all(Matcher *self, PyObject *args)
{
    PyObject *docs, *keys;
    double min_density;
    if (!PyArg_ParseTuple(args, "O!O!d:tag_all", &PyList_Type, &docs, &PyTuple_Type, &keys, &min_density))
        return NULL;
    if (PyTuple_GET_SIZE(keys) != 4) {
        PyErr_SetString(PyExc_ValueError, "keys must be 4 str");
        return NULL;
    }
    PyObject *markers_key = PyTuple_GET_ITEM(keys, 0), *words_key = PyTuple_GET_ITEM(keys, 1);
    PyObject *flag_key = PyTuple_GET_ITEM(keys, 2), *entries_key = PyTuple_GET_ITEM(keys, 3);
    PyObject *text_name = PyUnicode_InternFromString("text");
    PyObject *metrics_name = PyUnicode_InternFromString("metrics");
    PyObject *meta_name = PyUnicode_InternFromString("meta");
    PyObject *below = PyList_New(0), *slow = PyList_New(0);
    PyObject *small[N_SMALL] = {NULL};
    /* a tuple of the documents: the attribute look-ups and dict updates below may run Python code,
     * which must not be able to shrink the list or free a document under the loop */
    PyObject *items = PyList_AsTuple(docs);
    Py_ssize_t n = items != NULL ? PyTuple_GET_SIZE(items) : 0;
    Batch b;
    if (batch_init(self, &b) < 0 || text_name == NULL || metrics_name == NULL || meta_name == NULL
        || below == NULL || slow == NULL || items == NULL)
        goto error;
    for (Py_ssize_t i = 0; i < N_SMALL; i++) {
        if ((small[i] = PyFloat_FromDouble((double)i)) == NULL)
            goto error;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *doc = PyTuple_GET_ITEM(items, k);
        PyObject *text = PyObject_GetAttr(doc, text_name);
        if (text == NULL)
            goto error;
        Py_ssize_t n_words = 0, count = 0;
        PyObject *entries = NULL;
        int status = find_one(self, &b, text, k, &count, &n_words, &entries);
        Py_DECREF(text);
        if (status < 0)
            goto error;
        if (status) {
            if (append_index(slow, k) < 0)
                goto error;
            continue;
        }
        PyObject *metrics = dict_attribute(doc, metrics_name), *meta = NULL;
        if (metrics == NULL || set_float(metrics, markers_key, count, small, N_SMALL) < 0
            || set_float(metrics, words_key, n_words, small, N_SMALL) < 0
            || PyDict_SetItem(metrics, flag_key, small[count != 0]) < 0
            || (meta = dict_attribute(doc, meta_name)) == NULL
            || PyDict_SetItem(meta, entries_key, entries) < 0) {
            Py_XDECREF(metrics);
            Py_XDECREF(meta);
            Py_DECREF(entries);
            goto error;
        }
        Py_DECREF(metrics);
        Py_DECREF(meta);
        Py_DECREF(entries);
        /* as drop_reason computes it, in doubles */
        if (min_density > 0
            && (!n_words || 1000.0 * (double)count / (double)n_words < min_density)
            && append_index(below, k) < 0)
            goto error;
    }
    batch_free(&b);
    Py_DECREF(items);
    for (Py_ssize_t i = 0; i < N_SMALL; i++)
        Py_DECREF(small[i]);
    Py_DECREF(text_name);
    Py_DECREF(metrics_name);
    Py_DECREF(meta_name);
    return Py_BuildValue("(NN)", below, slow);
error:
    batch_free(&b);
    Py_XDECREF(items);
    for (Py_ssize_t i = 0; i < N_SMALL; i++)
        Py_XDECREF(small[i]);
    Py_XDECREF(text_name);
    Py_XDECREF(metrics_name);
    Py_XDECREF(meta_name);
    Py_XDECREF(below);
    Py_XDECREF(slow);
    return NULL;
}

PyDoc_STRVAR(count_all_doc,
"count_all(texts, flagged, /) -> (counts, flagged_counts, tokens, slow)\n\n"
"For each text of a list of str, counts[k] is MarkerList.find(texts[k])'s marker count, flagged_counts[k]\n"
"the part of it whose entries are flagged (``flagged``: bytes, one 0 or 1 per label id, the entries in\n"
"sorted order) and tokens[k] len(fold_words(texts[k])), except for the indices in ``slow`` (see\n"
"find_all; 0 there).");

static PyObject *
count_all(Matcher *self, PyObject *args)
{
    PyObject *texts;
    Py_buffer flags = {0};
    if (!PyArg_ParseTuple(args, "O!y*:count_all", &PyList_Type, &texts, &flags))
        return NULL;
    if (flags.len != PyTuple_GET_SIZE(self->labels)) {
        PyBuffer_Release(&flags);
        PyErr_SetString(PyExc_ValueError, "flagged must hold one byte per entry");
        return NULL;
    }
    const unsigned char *flagged = flags.buf;
    Py_ssize_t n = PyList_GET_SIZE(texts);
    PyObject *counts = PyList_New(n), *flagged_counts = PyList_New(n), *tokens = PyList_New(n);
    PyObject *slow = PyList_New(0);
    Batch b;
    if (batch_init(self, &b) < 0 || counts == NULL || flagged_counts == NULL || tokens == NULL || slow == NULL)
        goto error;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *text = PyList_GET_ITEM(texts, k);
        Py_ssize_t n_words = 0, count = 0, n_flagged = 0, n_folded = 0, n_found = 0;
        if (!PyUnicode_Check(text)) {
            PyErr_Format(PyExc_TypeError, "texts[%zd] is not a str", k);
            goto error;
        }
        if (PyUnicode_READY(text) < 0)
            goto error;
        int status = scan_text(self, &b.s, PyUnicode_KIND(text), PyUnicode_DATA(text),
                               PyUnicode_GET_LENGTH(text), &n_words);
        if (status < 0)
            goto error;
        if (status) {
            if (append_index(slow, k) < 0)
                goto error;
        }
        else {
            count = b.s.hit ? match_tokens(self, &b.s, b.seen, k + 1, b.ids, &n_found, flagged, &n_flagged) : 0;
            n_folded = b.s.n_folded;
        }
        PyObject *a = PyLong_FromSsize_t(count), *f = PyLong_FromSsize_t(n_flagged);
        PyObject *c = PyLong_FromSsize_t(n_folded);
        if (a == NULL || f == NULL || c == NULL) {
            Py_XDECREF(a);
            Py_XDECREF(f);
            Py_XDECREF(c);
            goto error;
        }
        PyList_SET_ITEM(counts, k, a);
        PyList_SET_ITEM(flagged_counts, k, f);
        PyList_SET_ITEM(tokens, k, c);
    }
    batch_free(&b);
    PyBuffer_Release(&flags);
    return Py_BuildValue("(NNNN)", counts, flagged_counts, tokens, slow);
error:
    batch_free(&b);
    PyBuffer_Release(&flags);
    Py_XDECREF(counts);
    Py_XDECREF(flagged_counts);
    Py_XDECREF(tokens);
    Py_XDECREF(slow);
    return NULL;
}

static PyMethodDef matcher_methods[] = {
    {"find_all", (PyCFunction)find_all, METH_O, find_all_doc},
    {"count_all", (PyCFunction)count_all, METH_VARARGS, count_all_doc},
    {"tag_all", (PyCFunction)tag_all, METH_VARARGS, tag_all_doc},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject MatcherType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "qckit_builtins._markerscan.Matcher",
    .tp_basicsize = sizeof(Matcher),
    .tp_dealloc = (destructor)matcher_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A marker list in C tables (see matcher()).",
    .tp_methods = matcher_methods,
};

static PyMethodDef methods[] = {
    {"matcher", matcher_new, METH_VARARGS, matcher_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "_markerscan",
    .m_doc = "MarkerList.find for a whole batch of texts, for the dialect tagger (see markerscan.c).",
    .m_size = -1,
    .m_methods = methods,
};

PyMODINIT_FUNC
PyInit__markerscan(void)
{
    if (PyType_Ready(&MatcherType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    /* the interface version that qckit_builtins.accelerated expects: bump it with every change of
     * matcher()'s or find_all()'s arguments or results, so that a stale build is left unused */
    if (m != NULL && PyModule_AddIntConstant(m, "API", 3) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
