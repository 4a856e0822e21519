// A C face for RE2 (Debian's libre2-dev), the linear-time regular expression engine whose
// syntax the reference COSI runtime's Go regexp shares. Swift owns each compiled pattern
// through CosiState's IDPattern.
#ifndef COSI_CRE2_H
#define COSI_CRE2_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/// A compiled pattern (an RE2 object). Matching is thread-safe.
typedef struct cosi_re2 cosi_re2;

/// Compiles `pattern` (UTF-8, `length` bytes). Returns NULL when it does not compile, with the
/// reason in `error` (NUL-terminated, truncated to `error_capacity`). Compilation is bounded by
/// RE2's memory budget (8 MiB): a pattern over it does not compile.
cosi_re2 *cosi_re2_new(const char *pattern, size_t length, char *error, size_t error_capacity);

/// Frees a compiled pattern.
void cosi_re2_free(cosi_re2 *re);

/// 1 when `re` matches somewhere in `text` (unanchored), 0 otherwise. Linear in the text.
int cosi_re2_partial_match(const cosi_re2 *re, const char *text, size_t length);

#ifdef __cplusplus
}
#endif

#endif
