/*
 * lwslave: a Modbus slave on libmodbus 3.1.6, the tests' second Modbus implementation
 * (the agent's side is pymodbus; the project's simulator is pymodbus too).
 *
 *   lwslave --rtu DEVICE [--baud 19200] [--parity N|E|O] [--stop 1|2] --unit N
 *   lwslave --tcp PORT --unit N [--unit M]          (PORT 0: any free port)
 *
 * Registers and faults come as lines on stdin, each acknowledged "ok N" (N counts
 * commands) so a test knows the state is in place before it polls:
 *
 *   set UNIT TABLE ADDR V...          TABLE: coil|discrete|holding|input
 *   fault UNIT TABLE ADDR COUNT CODE  requests touching ADDR..ADDR+COUNT-1 get exception
 *                                     CODE (0 removes the faults of that table)
 *   silent UNIT 0|1                   no answer at all to that unit
 *   busy UNIT N                       exception 06 (busy) to its next N requests
 *   delay UNIT MS                     wait MS before each answer
 *   quit
 *
 * Every request is logged on stdout with CLOCK_MONOTONIC (Python's time.monotonic) taken
 * when the answer's values are read, so a test can tell exactly what was served when:
 *
 *   served T UNIT FC ADDR COUNT V...  | exception T UNIT FC ADDR COUNT CODE
 *   ignored T UNIT FC ADDR COUNT      | rxerror T MESSAGE
 *
 * Kept on purpose without a Python binding: it must share no code with the agent.
 */
#include <errno.h>
#include <modbus.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <time.h>
#include <unistd.h>

#define MAX_UNITS 4
#define MAX_FAULTS 16
#define TABLE_SIZE 1024
#define MAX_CLIENTS 16

struct fault { int fc, addr, count, code; };
struct unit {
    int id, silent, busy, delay_ms, nfaults;
    modbus_mapping_t *map;
    struct fault faults[MAX_FAULTS];
};

static struct unit units[MAX_UNITS];
static int nunits, ncommands;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static struct unit *find_unit(int id)
{
    for (int i = 0; i < nunits; i++)
        if (units[i].id == id)
            return &units[i];
    return NULL;
}

static int table_fc(const char *name)
{
    const char *names[] = {"coil", "discrete", "holding", "input"};
    for (int i = 0; i < 4; i++)
        if (strcmp(name, names[i]) == 0)
            return i + 1;
    return 0;
}

/* One control line; returns 0 on "quit". Errors are reported, never fatal. */
static int command(char *line)
{
    char *argv[160];
    int argc = 0;
    for (char *tok = strtok(line, " \t\r\n"); tok && argc < 160; tok = strtok(NULL, " \t\r\n"))
        argv[argc++] = tok;
    if (argc == 0)
        return 1;
    ncommands++;
    if (strcmp(argv[0], "quit") == 0)
        return 0;
    struct unit *u = argc > 1 ? find_unit(atoi(argv[1])) : NULL;
    int fc = argc > 2 ? table_fc(argv[2]) : 0;
    if (u == NULL) {
        printf("error %d: unknown unit in '%s'\n", ncommands, argv[0]);
    } else if (strcmp(argv[0], "set") == 0 && argc >= 5 && fc) {
        int addr = atoi(argv[3]);
        for (int i = 4; i < argc && addr < TABLE_SIZE; i++, addr++) {
            int v = atoi(argv[i]);
            switch (fc) {
            case 1: u->map->tab_bits[addr] = v != 0; break;
            case 2: u->map->tab_input_bits[addr] = v != 0; break;
            case 3: u->map->tab_registers[addr] = (uint16_t) v; break;
            default: u->map->tab_input_registers[addr] = (uint16_t) v; break;
            }
        }
        printf("ok %d\n", ncommands);
    } else if (strcmp(argv[0], "fault") == 0 && argc == 6 && fc) {
        int code = atoi(argv[5]), kept = 0;
        for (int i = 0; i < u->nfaults; i++)  /* code 0: drop this table's faults */
            if (code || u->faults[i].fc != fc)
                u->faults[kept++] = u->faults[i];
        u->nfaults = kept;
        if (code && u->nfaults == MAX_FAULTS) {
            printf("error %d: more than %d faults\n", ncommands, MAX_FAULTS);
        } else {
            if (code)
                u->faults[u->nfaults++] = (struct fault){fc, atoi(argv[3]), atoi(argv[4]), code};
            printf("ok %d\n", ncommands);
        }
    } else if (argc == 3 && strcmp(argv[0], "silent") == 0) {
        u->silent = atoi(argv[2]);
        printf("ok %d\n", ncommands);
    } else if (argc == 3 && strcmp(argv[0], "busy") == 0) {
        u->busy = atoi(argv[2]);
        printf("ok %d\n", ncommands);
    } else if (argc == 3 && strcmp(argv[0], "delay") == 0) {
        u->delay_ms = atoi(argv[2]);
        printf("ok %d\n", ncommands);
    } else {
        printf("error %d: cannot read '%s'\n", ncommands, argv[0]);
    }
    return 1;
}

/* Answer one request read by modbus_receive (len bytes at req). */
static void serve(modbus_t *ctx, const uint8_t *req, int len)
{
    int off = modbus_get_header_length(ctx);
    int id = req[off - 1], fc = req[off];
    int addr = (req[off + 1] << 8) | req[off + 2], count = (req[off + 3] << 8) | req[off + 4];
    struct unit *u = find_unit(id);
    if (u == NULL || u->silent) {
        printf("ignored %.6f %d %d %d %d\n", now(), id, fc, addr, count);
        return;
    }
    if (u->delay_ms > 0)
        usleep(u->delay_ms * 1000);
    int code = 0;
    if (u->busy > 0) {
        u->busy--;
        code = MODBUS_EXCEPTION_SLAVE_OR_SERVER_BUSY;
    }
    for (int i = 0; i < u->nfaults && !code; i++) {
        struct fault *f = &u->faults[i];
        if (f->fc == fc && addr < f->addr + f->count && f->addr < addr + count)
            code = f->code;
    }
    if (!code && fc >= 1 && fc <= 4 && (count < 1 || addr + count > TABLE_SIZE))
        code = MODBUS_EXCEPTION_ILLEGAL_DATA_ADDRESS;  /* libmodbus would answer the same */
    double t = now();
    if (code) {
        printf("exception %.6f %d %d %d %d %d\n", t, id, fc, addr, count, code);
        modbus_reply_exception(ctx, req, code);
        return;
    }
    printf("served %.6f %d %d %d %d", t, id, fc, addr, count);
    for (int i = 0; fc >= 1 && fc <= 4 && i < count; i++) {
        modbus_mapping_t *m = u->map;
        int v = fc == 1 ? m->tab_bits[addr + i] : fc == 2 ? m->tab_input_bits[addr + i]
              : fc == 3 ? m->tab_registers[addr + i] : m->tab_input_registers[addr + i];
        printf(" %d", v);
    }
    printf("\n");
    modbus_reply(ctx, req, len, u->map);
}

int main(int argc, char **argv)
{
    const char *device = NULL;
    int tcp_port = -1, baud = 19200, stop = 1, debug = 0;
    char parity = 'N';
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--debug") == 0) { debug = 1; continue; }
        if (v == NULL) { fprintf(stderr, "lwslave: %s needs a value\n", a); return 2; }
        i++;
        if (strcmp(a, "--rtu") == 0) device = v;
        else if (strcmp(a, "--tcp") == 0) tcp_port = atoi(v);
        else if (strcmp(a, "--baud") == 0) baud = atoi(v);
        else if (strcmp(a, "--parity") == 0) parity = v[0];
        else if (strcmp(a, "--stop") == 0) stop = atoi(v);
        else if (strcmp(a, "--unit") == 0 && nunits < MAX_UNITS) {
            units[nunits].id = atoi(v);
            units[nunits++].map = modbus_mapping_new(TABLE_SIZE, TABLE_SIZE, TABLE_SIZE,
                                                     TABLE_SIZE);
        } else { fprintf(stderr, "lwslave: unknown option %s\n", a); return 2; }
    }
    if ((device == NULL) == (tcp_port < 0) || nunits == 0) {
        fprintf(stderr, "usage: lwslave (--rtu DEVICE | --tcp PORT) --unit N [--unit M]\n");
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    modbus_t *ctx = device ? modbus_new_rtu(device, baud, parity, 8, stop)
                           : modbus_new_tcp("127.0.0.1", tcp_port);
    if (ctx == NULL) { fprintf(stderr, "lwslave: %s\n", modbus_strerror(errno)); return 1; }
    modbus_set_debug(ctx, debug);
    modbus_set_slave(ctx, units[0].id);  /* RTU: libmodbus ignores requests to other units */
    int listen_fd = -1, line_fd = -1, clients[MAX_CLIENTS], nclients = 0;
    if (device) {
        if (modbus_connect(ctx) == -1) {
            fprintf(stderr, "lwslave: %s: %s\n", device, modbus_strerror(errno));
            return 1;
        }
        line_fd = modbus_get_socket(ctx);
        printf("ready rtu %s\n", device);
    } else {
        listen_fd = modbus_tcp_listen(ctx, MAX_CLIENTS);
        struct sockaddr_in sa;
        socklen_t sl = sizeof sa;
        if (listen_fd < 0 || getsockname(listen_fd, (struct sockaddr *) &sa, &sl) < 0) {
            fprintf(stderr, "lwslave: listen: %s\n", modbus_strerror(errno));
            return 1;
        }
        printf("ready tcp %d\n", ntohs(sa.sin_port));
    }
    uint8_t req[MODBUS_TCP_MAX_ADU_LENGTH];
    char line[4096];
    for (;;) {
        fd_set rd;
        FD_ZERO(&rd);
        FD_SET(0, &rd);
        int top = 0;
        if (line_fd >= 0) { FD_SET(line_fd, &rd); top = line_fd; }
        if (listen_fd >= 0) { FD_SET(listen_fd, &rd); top = listen_fd > top ? listen_fd : top; }
        for (int i = 0; i < nclients; i++) {
            FD_SET(clients[i], &rd);
            top = clients[i] > top ? clients[i] : top;
        }
        if (select(top + 1, &rd, NULL, NULL, NULL) < 0) {
            if (errno == EINTR) continue;
            perror("lwslave: select");
            return 1;
        }
        if (FD_ISSET(0, &rd)) {
            if (fgets(line, sizeof line, stdin) == NULL || !command(line))
                break;  /* stdin closed or quit: the test is done with us */
        }
        if (line_fd >= 0 && FD_ISSET(line_fd, &rd)) {
            int n = modbus_receive(ctx, req);
            if (n > 0) serve(ctx, req, n);
            else if (n < 0) printf("rxerror %.6f %s\n", now(), modbus_strerror(errno));
        }
        if (listen_fd >= 0 && FD_ISSET(listen_fd, &rd)) {
            int fd = accept(listen_fd, NULL, NULL);
            if (fd >= 0 && nclients < MAX_CLIENTS) clients[nclients++] = fd;
            else if (fd >= 0) close(fd);
        }
        for (int i = 0; i < nclients; i++) {
            if (!FD_ISSET(clients[i], &rd)) continue;
            modbus_set_socket(ctx, clients[i]);
            int n = modbus_receive(ctx, req);
            if (n > 0) {
                serve(ctx, req, n);
            } else if (n < 0) {  /* peer closed (or sent garbage): forget it */
                close(clients[i]);
                clients[i--] = clients[--nclients];
            }
        }
    }
    for (int i = 0; i < nclients; i++) close(clients[i]);
    if (listen_fd >= 0) close(listen_fd);
    modbus_close(ctx);
    modbus_free(ctx);
    for (int i = 0; i < nunits; i++) modbus_mapping_free(units[i].map);
    return 0;
}
