/* A Modbus server and client built on libmodbus, to test edgert's driver and simulator
 * against an independent implementation.
 *
 *   libmodbus_peer server tcp PORT | server rtu DEVICE UNIT
 *     Serves a 65536-entry map of each table, filled with typed values written by
 *     libmodbus itself (see fill()). Prints "ready" once listening, then for every
 *     request "req FC ADDRESS COUNT" and, after a write, "mem TABLE ADDRESS V1 V2 ..."
 *     (the words or bits written, as held after the write).
 *   libmodbus_peer client tcp HOST PORT UNIT CMD... | client rtu DEVICE UNIT CMD...
 *     Runs each CMD and prints one line for it: "ok V..." or "err MESSAGE".
 *     CMDs: r1|r2|r3|r4:ADDR:COUNT, w5:ADDR:0|1, w6:ADDR:V, w15:ADDR:BITS (a string of
 *     0/1), w16:ADDR:V,V,...
 */
#include <errno.h>
#include <modbus.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define N 65536

/* `f` into two registers, its bytes (a = most significant) in `order`. */
static void put_float(float f, const char *order, uint16_t *dest) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint8_t b[4];
    for (int i = 0; i < 4; i++) b[i] = (uint8_t)(u >> (8 * (3 - order[i] + 'a')));
    dest[0] = (uint16_t)(b[0] << 8 | b[1]);
    dest[1] = (uint16_t)(b[2] << 8 | b[3]);
}

static void fill(modbus_mapping_t *mb) {
    uint16_t *h = mb->tab_registers, *in = mb->tab_input_registers;
    /* libmodbus 3.1.6's modbus_set_float_abcd and its siblings give the wrong order
     * on little-endian hosts (abcd comes out badc), so the bytes are placed here. */
    put_float(123.456f, "abcd", h + 100);
    put_float(123.456f, "badc", h + 102);
    put_float(123.456f, "cdab", h + 104);
    put_float(123.456f, "dcba", h + 106);
    int32_t i32 = -123456789;
    int64_t i64 = -1234567890123LL;
    MODBUS_SET_INT32_TO_INT16(h, 110, i32);
    MODBUS_SET_INT64_TO_INT16(h, 120, i64);
    h[130] = 65535;
    h[131] = (uint16_t)-2;
    h[132] = 0x80FE; /* int8 high -128, uint8 low 254; bits 1..7 and 15 set */
    h[133] = 0x1234; /* BCD 1234 */
    h[134] = 0x3E00; /* float16 1.5 */
    const char *s = "LIBMODBUS-3.1";
    for (size_t i = 0; i < 8; i++) {
        uint8_t hi = i * 2 < strlen(s) ? s[i * 2] : 0, lo = i * 2 + 1 < strlen(s) ? s[i * 2 + 1] : 0;
        h[140 + i] = (uint16_t)(hi << 8 | lo);
    }
    put_float(-0.5f, "abcd", in + 65534);
    in[65533] = 4242;
    mb->tab_bits[7] = 1;
    mb->tab_bits[65535] = 1;
    mb->tab_input_bits[9] = 1;
}

static void report(modbus_t *ctx, const uint8_t *q, modbus_mapping_t *mb) {
    int hl = modbus_get_header_length(ctx);
    int fc = q[hl], addr = q[hl + 1] << 8 | q[hl + 2], count = q[hl + 3] << 8 | q[hl + 4];
    if (fc == 5 || fc == 6) count = 1;
    printf("req %d %d %d\n", fc, addr, count);
    if (fc == 5 || fc == 15) {
        printf("mem coil %d ", addr);
        for (int i = 0; i < count && addr + i < N; i++) putchar(mb->tab_bits[addr + i] ? '1' : '0');
        putchar('\n');
    } else if (fc == 22) {
        printf("mem holding %d %u\n", addr, mb->tab_registers[addr]);
    } else if (fc == 6 || fc == 16) {
        printf("mem holding %d", addr);
        for (int i = 0; i < count && addr + i < N; i++) printf(" %u", mb->tab_registers[addr + i]);
        putchar('\n');
    }
    fflush(stdout);
}

static int server(int argc, char **argv) {
    modbus_t *ctx;
    int listener = -1, tcp = strcmp(argv[2], "tcp") == 0;
    if (tcp) {
        ctx = modbus_new_tcp("127.0.0.1", atoi(argv[3]));
    } else {
        ctx = modbus_new_rtu(argv[3], 115200, 'N', 8, 1);
        if (ctx) modbus_set_slave(ctx, atoi(argv[4]));
    }
    modbus_mapping_t *mb = modbus_mapping_new(N, N, N, N);
    if (!ctx || !mb) return fprintf(stderr, "setup: %s\n", modbus_strerror(errno)), 1;
    fill(mb);
    if (tcp) {
        listener = modbus_tcp_listen(ctx, 1);
        if (listener < 0) return fprintf(stderr, "listen: %s\n", modbus_strerror(errno)), 1;
    } else if (modbus_connect(ctx) < 0) {
        return fprintf(stderr, "open %s: %s\n", argv[3], modbus_strerror(errno)), 1;
    }
    printf("ready\n");
    fflush(stdout);
    uint8_t q[MODBUS_TCP_MAX_ADU_LENGTH];
    for (;;) {
        if (tcp && modbus_tcp_accept(ctx, &listener) < 0) return 1;
        for (;;) {
            int rc = modbus_receive(ctx, q);
            if (rc > 0) {
                modbus_reply(ctx, q, rc, mb);
                report(ctx, q, mb);
            } else if (rc < 0 && tcp) {
                break; /* the connection closed: wait for the next */
            }
        }
        modbus_close(ctx);
    }
}

static void print_regs(const uint16_t *r, int n) {
    printf("ok");
    for (int i = 0; i < n; i++) printf(" %u", r[i]);
    putchar('\n');
}

static int command(modbus_t *ctx, char *cmd) {
    static uint16_t regs[200];
    static uint8_t bits[2000];
    char *op = strtok(cmd, ":");
    int rc = -1;
    if (op[0] == 'r') {
        int fc = atoi(op + 1), addr = atoi(strtok(NULL, ":")), n = atoi(strtok(NULL, ":"));
        if (fc == 1 || fc == 2) {
            rc = fc == 1 ? modbus_read_bits(ctx, addr, n, bits) : modbus_read_input_bits(ctx, addr, n, bits);
            if (rc >= 0) {
                printf("ok ");
                for (int i = 0; i < n; i++) putchar(bits[i] ? '1' : '0');
                putchar('\n');
            }
        } else {
            rc = fc == 3 ? modbus_read_registers(ctx, addr, n, regs) : modbus_read_input_registers(ctx, addr, n, regs);
            if (rc >= 0) print_regs(regs, n);
        }
    } else if (strcmp(op, "w5") == 0) {
        int addr = atoi(strtok(NULL, ":"));
        rc = modbus_write_bit(ctx, addr, atoi(strtok(NULL, ":")));
        if (rc >= 0) printf("ok\n");
    } else if (strcmp(op, "w6") == 0) {
        int addr = atoi(strtok(NULL, ":"));
        rc = modbus_write_register(ctx, addr, atoi(strtok(NULL, ":")));
        if (rc >= 0) printf("ok\n");
    } else if (strcmp(op, "w15") == 0) {
        int addr = atoi(strtok(NULL, ":"));
        char *b = strtok(NULL, ":");
        int n = strlen(b);
        for (int i = 0; i < n; i++) bits[i] = b[i] == '1';
        rc = modbus_write_bits(ctx, addr, n, bits);
        if (rc >= 0) printf("ok\n");
    } else if (strcmp(op, "w16") == 0) {
        int addr = atoi(strtok(NULL, ":")), n = 0;
        for (char *v = strtok(NULL, ":,"); v; v = strtok(NULL, ",")) regs[n++] = atoi(v);
        rc = modbus_write_registers(ctx, addr, n, regs);
        if (rc >= 0) printf("ok\n");
    } else {
        printf("err unknown command %s\n", op);
        return 0;
    }
    if (rc < 0) printf("err %s\n", modbus_strerror(errno));
    fflush(stdout);
    return 0;
}

static int client(int argc, char **argv) {
    modbus_t *ctx;
    int i;
    if (strcmp(argv[2], "tcp") == 0) {
        ctx = modbus_new_tcp(argv[3], atoi(argv[4]));
        i = 5;
    } else {
        ctx = modbus_new_rtu(argv[3], 115200, 'N', 8, 1);
        i = 4;
    }
    if (!ctx) return fprintf(stderr, "setup: %s\n", modbus_strerror(errno)), 1;
    modbus_set_slave(ctx, atoi(argv[i++]));
    modbus_set_response_timeout(ctx, 1, 0);
    if (modbus_connect(ctx) < 0) return fprintf(stderr, "connect: %s\n", modbus_strerror(errno)), 1;
    for (; i < argc; i++) command(ctx, argv[i]);
    modbus_close(ctx);
    modbus_free(ctx);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 4 && strcmp(argv[1], "server") == 0) return server(argc, argv);
    if (argc >= 5 && strcmp(argv[1], "client") == 0) return client(argc, argv);
    fprintf(stderr, "usage: see the comment at the top of libmodbus_peer.c\n");
    return 2;
}
