#ifndef COSI_CPROTOBUFC_H
#define COSI_CPROTOBUFC_H
#include <protobuf-c/protobuf-c.h>
#endif
