#include "cre2.h"

#include <cstring>
#include <new>
#include <re2/re2.h>

extern "C" cosi_re2 *cosi_re2_new(const char *pattern, size_t length, char *error, size_t error_capacity) {
    RE2::Options options;
    options.set_log_errors(false);
    RE2 *re = new (std::nothrow) RE2(re2::StringPiece(pattern, length), options);
    if (re == nullptr) {
        if (error_capacity > 0) std::strncpy(error, "out of memory", error_capacity - 1), error[error_capacity - 1] = 0;
        return nullptr;
    }
    if (!re->ok()) {
        if (error_capacity > 0) {
            std::strncpy(error, re->error().c_str(), error_capacity - 1);
            error[error_capacity - 1] = 0;
        }
        delete re;
        return nullptr;
    }
    return reinterpret_cast<cosi_re2 *>(re);
}

extern "C" void cosi_re2_free(cosi_re2 *re) {
    delete reinterpret_cast<RE2 *>(re);
}

extern "C" int cosi_re2_partial_match(const cosi_re2 *re, const char *text, size_t length) {
    return RE2::PartialMatch(re2::StringPiece(text, length), *reinterpret_cast<const RE2 *>(re)) ? 1 : 0;
}
