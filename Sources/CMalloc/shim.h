#ifndef PROGSYNC_CMALLOC_SHIM_H
#define PROGSYNC_CMALLOC_SHIM_H
#include <malloc.h>
#endif
