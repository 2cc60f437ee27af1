/* cryo-resume: learn that cryo restored this process. See resume/README.md. */
#ifndef CRYO_RESUME_H
#define CRYO_RESUME_H

#ifdef __cplusplus
extern "C" {
#endif

/* Opens the notification channel: an fd (O_RDWR | O_NONBLOCK | O_CLOEXEC) to poll for
 * POLLIN and read JSON lines from, one per restore. -1 and errno on failure.
 * Keep the fd at its number: cryo finds it by number. Never write to it. */
int cryo_resume_open(void);

/* Closes a channel from cryo_resume_open and its marker. 0, or -1 and errno (EBADF). */
int cryo_resume_close(int fd);

/* Waits up to timeout_ms (-1: forever) for the channel to be readable: 1 readable,
 * 0 timeout, -1 and errno. */
int cryo_resume_wait(int fd, int timeout_ms);

/* The version of the channel convention and record format: 1. */
int cryo_resume_format_version(void);

#ifdef __cplusplus
}
#endif

#endif
