#ifndef DEMO_VERSION_H
#define DEMO_VERSION_H

#define DEMO_VERSION "1.0.0"

#endif
