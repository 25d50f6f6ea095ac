/* The codec core, compiled into the engine extension too (tftp_engine.c builds its packets with it). */
#include "tftp_codec.c"
