/**
 * @file harness.h
 * @brief Test helpers: the throwaway PostgreSQL started by scripts/test, the
 *        librdkafka mock cluster, and running the real kpbridge binary.
 */
#ifndef KPB_HARNESS_H
#define KPB_HARNESS_H

#include <stddef.h>

/** @brief Reads a whole file into a NUL-terminated heap buffer (or NULL). */
char *kpbt_read_file(const char *path, size_t *len);

#endif
