/*
 * PostgreSQL's data page checksum at C speed, for pgkura.pg.checksum.
 *
 * The algorithm is the one of src/include/storage/checksum_impl.h (see checksum.py's docstring):
 * a page is 64 rows of 32 native uint32 words; 32 lanes each mix in their column of words
 * (tmp = lane ^ word; lane = tmp * FNV_PRIME ^ (tmp >> 17)), then two rounds of zeros; the lanes
 * are xor-folded, the block number xored in, and the result reduced to % 65535 + 1.
 * pd_checksum (bytes 8-9) counts as zero: the page is read-only here, so row 0 is mixed from a
 * copy in which those bytes are cleared.
 *
 * Two loops: on x86-64 processors with AVX2 (chosen at run time, __builtin_cpu_supports), eight
 * lanes per register, 36 GB/s on one core of this project's machine (an Intel Xeon VM with
 * AVX-512); elsewhere the lanes mixed one word at a time in plain C that any compiler builds,
 * 13 GB/s there, bound by one 32-bit multiply per lane and row. (On the AMD EPYC VM of an
 * earlier measurement GCC's vector extensions, written differently, were no faster than the
 * scalar loop; both loops are checked against each other, numpy and pg_checksums by
 * tests/test_checksums.py.) pg_checksums, whose build vectorises the loop and which reads the
 * files too, checked about 4.7 GB/s there.
 * The GIL is released while pages are summed: threads of one process check pages in parallel.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define BLCKSZ 8192
#define N_SUMS 32
#define ROWS (BLCKSZ / (4 * N_SUMS))
#define FNV_PRIME 16777619u
#define PD_CHECKSUM 8
#define PD_UPPER 14
/* Below this many pages the GIL is kept: releasing it costs more than the work. */
#define NOGIL_PAGES 16

static const uint32_t base_offsets[N_SUMS] = {
    0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A, 0x79FF467A, 0x9BB9F8A3, 0x217E7CD2,
    0x83E13D2C, 0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA, 0x7B093B5D, 0x98DAFF3C,
    0xF718902A, 0x0B1C9CDB, 0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE, 0x92BEC979,
    0xCCA6C0B2, 0x304A0979, 0x85AA43D4, 0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E,
    0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
};

static inline void mix(uint32_t *sums, const uint32_t *row)
{
    for (int j = 0; j < N_SUMS; j++) {
        uint32_t tmp = sums[j] ^ row[j];
        sums[j] = tmp * FNV_PRIME ^ (tmp >> 17);
    }
}

/* The checksum PostgreSQL stores in one page that is block ``blkno`` of its fork. */
static uint16_t page_checksum(const unsigned char *page, uint32_t blkno)
{
    uint32_t sums[N_SUMS];
    uint32_t row[N_SUMS];
    const uint32_t zeros[N_SUMS] = {0};
    uint32_t folded = 0;

    memcpy(sums, base_offsets, sizeof(sums));
    memcpy(row, page, sizeof(row));
    memset((unsigned char *) row + PD_CHECKSUM, 0, 2);
    mix(sums, row);
    for (int i = 1; i < ROWS; i++) {
        memcpy(row, page + i * sizeof(row), sizeof(row)); /* no alignment assumed */
        mix(sums, row);
    }
    mix(sums, zeros);
    mix(sums, zeros);
    for (int j = 0; j < N_SUMS; j++)
        folded ^= sums[j];
    folded ^= blkno;
    return (uint16_t) (folded % 65535u + 1u);
}

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define HAVE_AVX2_KERNEL 1

/* One row into the lanes, eight lanes per AVX2 register (tmp = lane ^ word; lane = tmp *
 * FNV_PRIME ^ (tmp >> 17)): the same arithmetic as mix(), four registers for the 32 lanes. */
#define MIX8(s, w)                                                                         \
    do {                                                                                   \
        __m256i t_ = _mm256_xor_si256((s), (w));                                           \
        (s) = _mm256_xor_si256(_mm256_mullo_epi32(t_, prime), _mm256_srli_epi32(t_, 17)); \
    } while (0)

/* page_checksum() with AVX2, for x86-64 processors that have it (chosen at run time). The
 * scalar loop is bound by one 32-bit multiply per lane and row; here one instruction
 * multiplies eight lanes, so the lanes' chains of dependent multiplies are the limit. */
__attribute__((target("avx2"))) static uint16_t page_checksum_avx2(const unsigned char *page,
                                                                   uint32_t blkno)
{
    const __m256i prime = _mm256_set1_epi32((int) FNV_PRIME);
    const __m256i zero = _mm256_setzero_si256();
    const __m256i *base = (const __m256i *) base_offsets;
    __m256i s0 = _mm256_loadu_si256(base), s1 = _mm256_loadu_si256(base + 1);
    __m256i s2 = _mm256_loadu_si256(base + 2), s3 = _mm256_loadu_si256(base + 3);
    uint32_t row[N_SUMS];
    uint32_t lanes[8];
    uint32_t folded = 0;

    memcpy(row, page, sizeof(row));
    memset((unsigned char *) row + PD_CHECKSUM, 0, 2);
    for (int i = 0; i < ROWS; i++) {
        const __m256i *r = i ? (const __m256i *) (page + i * sizeof(row)) : (const __m256i *) row;
        MIX8(s0, _mm256_loadu_si256(r));
        MIX8(s1, _mm256_loadu_si256(r + 1));
        MIX8(s2, _mm256_loadu_si256(r + 2));
        MIX8(s3, _mm256_loadu_si256(r + 3));
    }
    for (int i = 0; i < 2; i++) {
        MIX8(s0, zero);
        MIX8(s1, zero);
        MIX8(s2, zero);
        MIX8(s3, zero);
    }
    _mm256_storeu_si256((__m256i *) lanes,
                        _mm256_xor_si256(_mm256_xor_si256(s0, s1), _mm256_xor_si256(s2, s3)));
    for (int j = 0; j < 8; j++)
        folded ^= lanes[j];
    folded ^= blkno;
    return (uint16_t) (folded % 65535u + 1u);
}
#endif

/* Whether the processor has AVX2, and whether page_checksum_avx2 is used (by default when
 * it has: kernel() chooses otherwise, for tests that compare the two). */
static int has_avx2 = 0;
static int use_avx2 = 0;

static inline uint16_t header_u16(const unsigned char *page, int offset)
{
    uint16_t v;
    memcpy(&v, page + offset, 2);
    return v;
}

/* Checksums of ``npages`` pages; block numbers from ``blknos`` or counting from ``first``. */
static void sum_pages(const unsigned char *buf, Py_ssize_t npages, uint32_t first,
                             const uint32_t *blknos, uint16_t *out)
{
#ifdef HAVE_AVX2_KERNEL
    if (use_avx2) {
        for (Py_ssize_t i = 0; i < npages; i++)
            out[i] = page_checksum_avx2(buf + i * BLCKSZ,
                                        blknos ? blknos[i] : first + (uint32_t) i);
        return;
    }
#endif
    for (Py_ssize_t i = 0; i < npages; i++)
        out[i] = page_checksum(buf + i * BLCKSZ, blknos ? blknos[i] : first + (uint32_t) i);
}

static int page_buffer(PyObject *obj, Py_buffer *view)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_SIMPLE) < 0)
        return -1;
    if (view->len % BLCKSZ) {
        PyErr_Format(PyExc_ValueError,
                     "buffer of %zd bytes is not a whole number of %d-byte pages", view->len,
                     BLCKSZ);
        PyBuffer_Release(view);
        return -1;
    }
    return 0;
}

/* Computes the checksums of every page into a new bytes object of native uint16. */
static PyObject *compute(PyObject *pages, uint32_t first, PyObject *blkno_obj, Py_buffer *view)
{
    Py_buffer blknos = {0};
    PyObject *out = NULL;

    if (page_buffer(pages, view) < 0)
        return NULL;
    Py_ssize_t npages = view->len / BLCKSZ;
    if (blkno_obj != NULL) {
        if (PyObject_GetBuffer(blkno_obj, &blknos, PyBUF_SIMPLE) < 0)
            goto done;
        if (blknos.len != npages * 4) {
            PyErr_Format(PyExc_ValueError, "%zd bytes of uint32 block numbers for %zd pages",
                         blknos.len, npages);
            goto done;
        }
    }
    out = PyBytes_FromStringAndSize(NULL, npages * 2);
    if (out == NULL)
        goto done;
    {
        const unsigned char *buf = view->buf;
        const uint32_t *numbers = blkno_obj ? (const uint32_t *) blknos.buf : NULL;
        uint16_t *sums = (uint16_t *) PyBytes_AS_STRING(out);
        if (npages >= NOGIL_PAGES) {
            Py_BEGIN_ALLOW_THREADS
            sum_pages(buf, npages, first, numbers, sums);
            Py_END_ALLOW_THREADS
        } else {
            sum_pages(buf, npages, first, numbers, sums);
        }
    }
done:
    if (blknos.obj)
        PyBuffer_Release(&blknos);
    if (out == NULL)
        PyBuffer_Release(view);
    return out;
}

static int parse(PyObject *args, PyObject **pages, uint32_t *first, PyObject **blknos)
{
    PyObject *where;
    if (!PyArg_ParseTuple(args, "OO", pages, &where))
        return -1;
    *blknos = NULL;
    *first = 0;
    if (PyLong_Check(where)) {
        /* BlockNumber is uint32: wrap like C would. */
        *first = (uint32_t) PyLong_AsUnsignedLongLongMask(where);
        return PyErr_Occurred() ? -1 : 0;
    }
    *blknos = where;
    return 0;
}

static PyObject *checksums(PyObject *self, PyObject *args)
{
    PyObject *pages, *blknos;
    uint32_t first;
    Py_buffer view;
    if (parse(args, &pages, &first, &blknos) < 0)
        return NULL;
    PyObject *out = compute(pages, first, blknos, &view);
    if (out != NULL)
        PyBuffer_Release(&view);
    return out;
}

static PyObject *failing(PyObject *self, PyObject *args)
{
    PyObject *pages, *blknos;
    uint32_t first;
    Py_buffer view;
    if (parse(args, &pages, &first, &blknos) < 0)
        return NULL;
    PyObject *sums = compute(pages, first, blknos, &view);
    if (sums == NULL)
        return NULL;
    PyObject *bad = PyList_New(0);
    const unsigned char *buf = view.buf;
    const uint16_t *computed = (const uint16_t *) PyBytes_AS_STRING(sums);
    for (Py_ssize_t i = 0; bad != NULL && i < view.len / BLCKSZ; i++) {
        const unsigned char *page = buf + i * BLCKSZ;
        /* pd_upper == 0: a new page (PageIsNew), which carries no checksum (pg_checksums). */
        if (header_u16(page, PD_UPPER) == 0 || header_u16(page, PD_CHECKSUM) == computed[i])
            continue;
        PyObject *index = PyLong_FromSsize_t(i);
        if (index == NULL || PyList_Append(bad, index) < 0)
            Py_CLEAR(bad);
        Py_XDECREF(index);
    }
    Py_DECREF(sums);
    PyBuffer_Release(&view);
    return bad;
}

static PyObject *kernel(PyObject *self, PyObject *args)
{
    const char *name = NULL;
    if (!PyArg_ParseTuple(args, "|s", &name))
        return NULL;
    const char *current = use_avx2 ? "avx2" : "scalar";
    if (name != NULL) {
        if (strcmp(name, "scalar") == 0) {
            use_avx2 = 0;
        } else if (strcmp(name, "avx2") == 0 && has_avx2) {
            use_avx2 = 1;
        } else {
            PyErr_Format(PyExc_ValueError, "no %s page checksum kernel on this processor", name);
            return NULL;
        }
    }
    return PyUnicode_FromString(current);
}

static PyMethodDef methods[] = {
    {"kernel", kernel, METH_VARARGS,
     "kernel([name]) -> str\n\n"
     "Which loop sums pages: \"avx2\" (x86-64 processors that have it, the default there) or "
     "\"scalar\". With a name, uses that one from now on; returns the one used before."},
    {"checksums", checksums, METH_VARARGS,
     "checksums(pages, first_blkno_or_blknos) -> bytes\n\n"
     "The checksum PostgreSQL would store in each page of ``pages``, as native uint16. The "
     "second argument is the first page's block number (the others follow it), or a buffer "
     "of one native uint32 block number per page."},
    {"failing", failing, METH_VARARGS,
     "failing(pages, first_blkno_or_blknos) -> list[int]\n\n"
     "Indices of the pages whose stored checksum differs from the computed one, new pages "
     "(pd_upper == 0) excepted, as pg_checksums judges them."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_pagesum", "PostgreSQL's data page checksum in C.", -1, methods,
};

PyMODINIT_FUNC PyInit__pagesum(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
#ifdef HAVE_AVX2_KERNEL
    __builtin_cpu_init();
    has_avx2 = __builtin_cpu_supports("avx2");
#endif
    use_avx2 = has_avx2;
    return m;
}
