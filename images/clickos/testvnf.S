/*
 * vimprof test micro-VNF: a tiny diskless multiboot (v1) kernel.
 *
 * It stands in for a ClickOS unikernel where Xen is absent. On boot it
 * initialises COM1 (0x3F8, 115200 8N1, FIFO on, no interrupts), prints
 * exactly "vimprof-testvnf: ready\r\n" and then idles forever with
 * interrupts disabled (cli; hlt; jmp), using no CPU.
 *
 * Build: as --32 testvnf.S -o testvnf.o && ld -m elf_i386 -T testvnf.ld ...
 * (see build.sh). GNU assembler, AT&T syntax, 32-bit protected mode as
 * left by the multiboot loader (flat segments, paging off).
 */

        .set MB_MAGIC,    0x1BADB002
        .set MB_FLAGS,    0x00000000        /* ELF: no a.out kludge, no info needed */
        .set MB_CHECKSUM, -(MB_MAGIC + MB_FLAGS)

        .set COM1,        0x3F8
        .set UART_THR,    COM1 + 0          /* transmit holding (DLAB=0) */
        .set UART_DLL,    COM1 + 0          /* divisor latch low (DLAB=1) */
        .set UART_IER,    COM1 + 1          /* interrupt enable (DLAB=0) */
        .set UART_DLM,    COM1 + 1          /* divisor latch high (DLAB=1) */
        .set UART_FCR,    COM1 + 2          /* FIFO control */
        .set UART_LCR,    COM1 + 3          /* line control */
        .set UART_MCR,    COM1 + 4          /* modem control */
        .set UART_LSR,    COM1 + 5          /* line status */
        .set LSR_THRE,    0x20              /* transmit holding register empty */

        .set STACK_SIZE,  4096

/* The header must sit in the first 8 KiB of the image, 4-byte aligned. */
        .section .multiboot, "a"
        .balign 4
        .long MB_MAGIC
        .long MB_FLAGS
        .long MB_CHECKSUM

        .section .text
        .code32
        .globl _start
        .type _start, @function
_start:
        cli
        cld
        movl    $stack_top, %esp
        xorl    %ebp, %ebp

        call    uart_init

        movl    $ready_msg, %esi
        movl    $ready_len, %ecx
        call    uart_write

idle:
        cli
        hlt
        jmp     idle
        .size _start, . - _start

/* uart_init: 115200 baud, 8 data bits, no parity, 1 stop bit, FIFOs on. */
        .type uart_init, @function
uart_init:
        movw    $UART_IER, %dx          /* no UART interrupts */
        movb    $0x00, %al
        outb    %al, %dx
        movw    $UART_LCR, %dx          /* DLAB=1 to set the divisor */
        movb    $0x80, %al
        outb    %al, %dx
        movw    $UART_DLL, %dx          /* divisor 1 = 115200 baud */
        movb    $0x01, %al
        outb    %al, %dx
        movw    $UART_DLM, %dx
        movb    $0x00, %al
        outb    %al, %dx
        movw    $UART_LCR, %dx          /* DLAB=0, 8N1 */
        movb    $0x03, %al
        outb    %al, %dx
        movw    $UART_FCR, %dx          /* enable + clear FIFOs, 14-byte threshold */
        movb    $0xC7, %al
        outb    %al, %dx
        movw    $UART_MCR, %dx          /* DTR + RTS, OUT2 off (no IRQs) */
        movb    $0x03, %al
        outb    %al, %dx
        ret
        .size uart_init, . - uart_init

/* uart_write: send %ecx bytes from %esi, polling LSR.THRE before each byte. */
        .type uart_write, @function
uart_write:
        testl   %ecx, %ecx
        jz      2f
1:
        movw    $UART_LSR, %dx
0:
        inb     %dx, %al
        testb   $LSR_THRE, %al
        jz      0b
        movw    $UART_THR, %dx
        lodsb
        outb    %al, %dx
        decl    %ecx
        jnz     1b
2:
        ret
        .size uart_write, . - uart_write

        .section .rodata
ready_msg:
        .ascii  "vimprof-testvnf: ready\r\n"
        .set ready_len, . - ready_msg

        .section .bss
        .balign 16
stack_bottom:
        .skip   STACK_SIZE
stack_top:

        .section .note.GNU-stack, "", @progbits
