#include <systemd/sd-daemon.h>
#include <systemd/sd-journal.h>
/* malloc_trim: glibc's, which Swift's Glibc module does not export. The daemon calls it when idle so the pages
   a burst of calls freed go back to the system (see BreakwaterServer's heartbeat). */
#include <malloc.h>
