#ifndef COSI_CSQLITE_H
#define COSI_CSQLITE_H
#include <sqlite3.h>
#endif
