; The boot sector of boottest.GoldenImage: prints MARKER, CR, LF to COM1 and
; halts. boottest carries these bytes hand-assembled (bootCode in
; boottest.go); TestBootSectorMatchesNASM checks them against
;   nasm -f bin -dMARKER=<byte>,<byte>,... -o mbr.bin mbr.asm
; The BIOS (here iPXE's sanboot, via INT 13h drive 0x80) loads the sector at
; 0000:7C00 and jumps to it. No BIOS calls: the UART is written directly, so
; nothing else can interleave with the marker on the serial line.
bits 16
org 0x7c00
start:
    cli
    cld                 ; lodsb walks forwards
    xor ax, ax
    mov ds, ax          ; msg is addressed from segment 0, whatever CS is
    mov si, msg
.next:
    lodsb               ; al = [ds:si++]
    test al, al
    jz .halt            ; NUL ends the message
    mov ah, al
    mov dx, 0x3fd       ; COM1 line status register
.wait:
    in al, dx
    test al, 0x20       ; transmit holding register empty?
    jz .wait
    mov al, ah
    mov dl, 0xf8        ; dx = 0x3f8, COM1 transmit holding register
    out dx, al
    jmp .next
.halt:
    cli                 ; no interrupt wakes the hlt
    hlt
    jmp .halt
msg:                    ; offset 0x23: the marker is patched in here
    db MARKER, 13, 10, 0
    times 510-($-$$) db 0
    dw 0xaa55           ; boot signature: bytes 55 AA at offset 510
