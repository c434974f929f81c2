/* MB_API marks what libminiblock exports.  The library is built with hidden
 * visibility: everything else (the C++ block layer) stays inside it.  The
 * exported set is checked against tests/abi/libminiblock.symbols. */
#ifndef MINIBLOCK_MB_EXPORT_H
#define MINIBLOCK_MB_EXPORT_H

#if defined(_WIN32)
#define MB_API
#elif defined(__GNUC__) && __GNUC__ >= 4
#define MB_API __attribute__((visibility("default")))
#else
#define MB_API
#endif

#endif /* MINIBLOCK_MB_EXPORT_H */
