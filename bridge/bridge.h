/**
 * @file bridge.h
 * @brief The consume → decode → batch → write → commit loop of `run`.
 */
#ifndef KPB_BRIDGE_H
#define KPB_BRIDGE_H

#include <signal.h>
#include <stddef.h>

#include "config.h"

/**
 * @brief Consumes until *stop is set (or, with exit_at_end, until every
 *        assigned partition is at its end and everything read is written
 *        and committed), then flushes, commits and leaves the group.
 * @returns the process exit code: 0 clean stop, 1 runtime failure.
 */
int kpb_bridge_run(const kpb_config_t *conf, int exit_at_end,
                   volatile sig_atomic_t *stop);

#endif
