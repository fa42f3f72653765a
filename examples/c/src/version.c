#include "demo.h"
#include "version.h"

const char *demo_version(void) { return DEMO_VERSION; }
