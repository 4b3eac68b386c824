"""Emulated ESP32 / ESP32-S3 serial ROM loader (and the flasher-stub protocol) over SLIP.

Protocol facts come from esptool 5.6 (loader.py, targets/esp32.py, targets/esp32s3.py) and the
ESP32 Technical Reference Manual's "Serial download mode" description:

- request  = SLIP frame of `<BBHI` (0x00, op, data length, checksum) + data
- response = SLIP frame of `<BBHI` (0x01, op, data length, value) + data + status, where the ROM
  sends 4 status bytes (status, error, 0, 0) and the flasher stub 2 (status, error).
- FLASH_DATA / MEM_DATA / FLASH_DEFL_DATA carry `<IIII` (size, seq, 0, 0) + payload and the
  checksum 0xEF XOR every payload byte; a wrong checksum is error 0x07 (ROM) / 0xC1 (stub).
- SPI_FLASH_MD5 answers 32 lowercase hex characters from the ROM, 16 raw bytes from the stub.
- The flash id is read by programming the SPI controller's user-command registers (RDID 0x9F)
  and polling SPI_CMD_REG until the USR bit clears (loader.py run_spiflash_command).

Uploading code with MEM_BEGIN/MEM_DATA/MEM_END and jumping to it is how esptool starts its
flasher stub. We cannot execute Xtensa code, so a jump to a non-zero entry point is taken to
start "the stub": the loader greets with the SLIP frame b"OHAI" and from then on speaks the stub
protocol (2 status bytes, compressed writes, READ_FLASH, ERASE_FLASH/REGION, raw MD5).

The loader is a pure state machine: `feed(bytes)` returns the bytes the chip sends back, so it
can be tested without sockets. The unit (unit.py) owns the serial line, resets and boot modes.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

FLASH_SIZE = 4 * 1024 * 1024
SECTOR_SIZE = 0x1000
CHECKSUM_SEED = 0xEF

# Command opcodes (esptool loader.py ESP_CMDS)
FLASH_BEGIN = 0x02
FLASH_DATA = 0x03
FLASH_END = 0x04
MEM_BEGIN = 0x05
MEM_END = 0x06
MEM_DATA = 0x07
SYNC = 0x08
WRITE_REG = 0x09
READ_REG = 0x0A
SPI_SET_PARAMS = 0x0B
SPI_ATTACH = 0x0D
READ_FLASH_SLOW = 0x0E
CHANGE_BAUDRATE = 0x0F
FLASH_DEFL_BEGIN = 0x10
FLASH_DEFL_DATA = 0x11
FLASH_DEFL_END = 0x12
SPI_FLASH_MD5 = 0x13
GET_SECURITY_INFO = 0x14
ERASE_FLASH = 0xD0
ERASE_REGION = 0xD1
READ_FLASH = 0xD2

# ROM error codes (esptool util.py / ESP32 TRM)
ROM_INVALID_MESSAGE = 0x05
ROM_FAILED_TO_ACT = 0x06
ROM_INVALID_CRC = 0x07
ROM_FLASH_WRITE_ERROR = 0x08
ROM_FLASH_READ_ERROR = 0x09
ROM_READ_LENGTH_ERROR = 0x0A
ROM_DEFLATE_ERROR = 0x0B
# flasher stub error codes (esptool flasher_stub/include/stub_flasher.h)
STUB_BAD_DATA_LEN = 0xC0
STUB_BAD_DATA_CHECKSUM = 0xC1
STUB_BAD_BLOCKSIZE = 0xC2
STUB_INVALID_COMMAND = 0xC3
STUB_NOT_IN_FLASH_MODE = 0xC6
STUB_INFLATE_ERROR = 0xC7
STUB_TOO_MUCH_DATA = 0xC9

SPI_CMD_USR = 1 << 18  # SPI_CMD_REG bit that starts a user command and clears when done
SPIFLASH_RDID = 0x9F
SPIFLASH_RDSFDP = 0x5A

# Winbond W25Q32 (4 MB): manufacturer 0xEF, memory type 0x40, capacity 0x16 (2^22 bytes);
# RDID returns them in that order, so W0 reads 0x1640EF.
FLASH_ID_4MB = 0x1640EF

FAULTS = ("no-sync", "drop-bytes", "bad-verify", "no-boot")


@dataclass(frozen=True)
class ChipFacts:
    """What one chip's ROM exposes (addresses from esptool targets/*.py)."""

    name: str  # esptool --chip name
    display: str
    image_chip_id: int
    bootloader_offset: int
    spi_reg_base: int
    spi_usr_offs: int
    spi_usr2_offs: int
    spi_w0_offs: int
    uart_clkdiv_reg: int
    security_info: bool  # answers GET_SECURITY_INFO with a chip id (ESP32-S3 and later)
    flash_begin_words: int  # FLASH_BEGIN parameter words the ROM accepts (ESP32: 4, later: 5)
    fixed_registers: dict[int, int] = field(default_factory=dict)

    def mac_registers(self, mac: bytes) -> dict[int, int]:
        """eFuse words that carry `mac` the way esptool's read_mac() decodes them."""
        if self.name == "esp32":
            # EFUSE_BLK0_RDATA1 = MAC bytes 2..5, RDATA2 = CRC8 << 16 | MAC bytes 0..1
            efuse = 0x3FF5A000
            crc = _crc8_maxim(mac)
            return {
                efuse + 4: int.from_bytes(mac[2:6], "big"),
                efuse + 8: (crc << 16) | int.from_bytes(mac[0:2], "big"),
            }
        # ESP32-S3: MAC_EFUSE_REG = EFUSE_BASE + 0x44 holds bytes 2..5, +4 bytes 0..1
        mac_reg = 0x60007000 + 0x044
        return {
            mac_reg: int.from_bytes(mac[2:6], "big"),
            mac_reg + 4: int.from_bytes(mac[0:2], "big"),
        }


def _crc8_maxim(data: bytes) -> int:
    """CRC-8 (poly 0x31 reflected = 0x8C, init 0) that ESP32 eFuse BLK0 stores beside the MAC."""
    crc = 0
    for byte in reversed(data):
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8C if crc & 1 else crc >> 1
    return crc


ESP32 = ChipFacts(
    name="esp32",
    display="ESP32",
    image_chip_id=0,
    bootloader_offset=0x1000,
    spi_reg_base=0x3FF42000,
    spi_usr_offs=0x1C,
    spi_usr2_offs=0x24,
    spi_w0_offs=0x80,
    uart_clkdiv_reg=0x3FF40014,
    security_info=False,
    flash_begin_words=4,
    fixed_registers={
        0x40001000: 0x00F01D83,  # CHIP_DETECT_MAGIC_REG_ADDR -> ESP32
        # EFUSE_BLK0_RDATA3: pkg D0WD (bits 9..11 = 1), rated 240 MHz (bit 13), rev bit0 (bit 15)
        0x3FF5A00C: (1 << 9) | (1 << 13) | (1 << 15),
        # EFUSE_BLK0_RDATA4: CK8M frequency calibration = 200 (ROM crystal estimate 40 MHz)
        0x3FF5A010: 200,
        # EFUSE_BLK0_RDATA5: rev bit1 (bit 20); minor 0
        0x3FF5A014: 1 << 20,
        0x3FF6607C: 1 << 31,  # APB_CTL_DATE: rev bit2 -> chip revision v3.0
        0x3FF5F06C: 512 << 7,  # RTCCALICFG1: cali value (x 15625 x 200 / 40 = 40 MHz)
    },
)

ESP32S3 = ChipFacts(
    name="esp32s3",
    display="ESP32-S3",
    image_chip_id=9,
    bootloader_offset=0x0,
    spi_reg_base=0x60002000,
    spi_usr_offs=0x18,
    spi_usr2_offs=0x20,
    spi_w0_offs=0x58,
    uart_clkdiv_reg=0x60000014,
    security_info=True,
    flash_begin_words=5,
    fixed_registers={
        # EFUSE_BLOCK1 word 3 (0x60007050): minor revision low bits = 2 (bits 18..20) -> v0.2
        0x60007050: 2 << 18,
    },
)

CHIPS: dict[str, ChipFacts] = {"esp32": ESP32, "esp32s3": ESP32S3}


def chip_facts(name: str) -> ChipFacts:
    key = name.strip().lower().replace("-", "")
    if key not in CHIPS:
        raise ValueError(f"unknown chip {name!r}: use one of {', '.join(CHIPS)}")
    return CHIPS[key]


class Flash:
    """SPI NOR flash backed by a file: erase sets 0xFF, programming can only clear bits."""

    def __init__(self, path: str | Path, size: int = FLASH_SIZE) -> None:
        self.path = Path(path)
        self.size = size
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        have = os.fstat(fd).st_size
        if have < size:
            # a blank chip reads 0xFF; grow a short file the same way
            os.pwrite(fd, b"\xff" * (size - have), have)
        self._fd = fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise ValueError("read outside flash")
        return os.pread(self._fd, length, offset)

    def erase(self, offset: int, length: int) -> None:
        """Erase every sector that [offset, offset+length) touches."""
        if length <= 0:
            return
        start = offset - offset % SECTOR_SIZE
        end = min(self.size, -(-(offset + length) // SECTOR_SIZE) * SECTOR_SIZE)
        if start >= self.size:
            raise ValueError("erase outside flash")
        chunk = b"\xff" * (1 << 16)
        pos = start
        while pos < end:
            n = min(len(chunk), end - pos)
            os.pwrite(self._fd, chunk[:n], pos)
            pos += n

    def program(self, offset: int, data: bytes) -> None:
        if offset < 0 or offset + len(data) > self.size:
            raise ValueError("write outside flash")
        if not data:
            return
        old = os.pread(self._fd, len(data), offset)
        # NOR programming pulls bits from 1 to 0 only (the sector must be erased first)
        value = int.from_bytes(old, "little") & int.from_bytes(data, "little")
        os.pwrite(self._fd, value.to_bytes(len(data), "little"), offset)

    def md5(self, offset: int, length: int) -> bytes:
        digest = hashlib.md5()
        pos = offset
        end = offset + length
        while pos < end:
            n = min(1 << 16, end - pos)
            digest.update(self.read(pos, n))
            pos += n
        return digest.digest()


def slip_encode(packet: bytes) -> bytes:
    return b"\xc0" + packet.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc") + b"\xc0"


class SlipDecoder:
    """Incremental SLIP decoder; bytes outside frames (line noise, REPL keystrokes) are ignored.
    Works on runs of bytes (find/split), not byte by byte: flash writes pass through here."""

    def __init__(self) -> None:
        self._frame: bytearray | None = None  # the escaped bytes of the frame being received

    def reset(self) -> None:
        self._frame = None

    def feed(self, data: bytes) -> list[bytes]:
        frames: list[bytes] = []
        pos, end = 0, len(data)
        while pos < end:
            if self._frame is None:
                start = data.find(b"\xc0", pos)
                if start < 0:
                    break
                self._frame = bytearray()
                pos = start + 1
                continue
            stop = data.find(b"\xc0", pos)
            if stop < 0:
                self._frame += data[pos:]
                break
            self._frame += data[pos:stop]
            pos = stop + 1
            if not self._frame:
                continue  # C0 C0: a frame start after a stray end byte, keep waiting
            frame = _unescape(bytes(self._frame))
            self._frame = None
            if frame is not None:
                frames.append(frame)
        return frames


def _unescape(raw: bytes) -> bytes | None:
    """SLIP-unescape one frame; None for an invalid escape (the ROM drops such a frame)."""
    if b"\xdb" not in raw:
        return raw
    parts = raw.split(b"\xdb")
    out = bytearray(parts[0])
    for part in parts[1:]:
        if not part or part[0] not in (0xDC, 0xDD):
            return None
        out.append(0xC0 if part[0] == 0xDC else 0xDB)
        out += part[1:]
    return bytes(out)


def checksum(data: bytes) -> int:
    """0xEF XOR every byte (esptool ESPLoader.checksum), by folding the block onto itself."""
    value = int.from_bytes(data, "little")
    nbytes = len(data)
    while nbytes > 1:
        half = (nbytes + 1) // 2
        value = (value & ((1 << (8 * half)) - 1)) ^ (value >> (8 * half))
        nbytes = half
    return CHECKSUM_SEED ^ value


class CommandError(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class RomLoader:
    """One chip in serial download mode.

    `feed(data)` takes bytes from the host and returns bytes the chip transmits. `on_run_app`
    is called when the host tells the ROM to leave download mode and run the application
    (FLASH_END / FLASH_DEFL_END with "run user code").
    """

    def __init__(
        self,
        chip: ChipFacts,
        flash: Flash,
        mac: bytes,
        fault: str | None = None,
        baudrate: Callable[[], int] | None = None,
        on_run_app: Callable[[], None] | None = None,
    ) -> None:
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}: use one of {', '.join(FAULTS)}")
        self.chip = chip
        self.flash = flash
        self.mac = mac
        self.fault = fault
        self._baudrate = baudrate or (lambda: 115200)
        self.on_run_app = on_run_app
        self._decoder = SlipDecoder()
        self.registers: dict[int, int] = {}
        self.stub = False
        self.reset()

    # -- state -----------------------------------------------------------------------------------

    def reset(self) -> None:
        """Power-on / EN reset: ROM code starts from scratch (flash contents stay)."""
        self._decoder.reset()
        self.registers = dict(self.chip.fixed_registers)
        self.registers.update(self.chip.mac_registers(self.mac))
        self.stub = False
        self.flash_size = FLASH_SIZE
        self._write: dict | None = None  # active FLASH_BEGIN / FLASH_DEFL_BEGIN session
        self._mem: dict | None = None
        self._read: dict | None = None  # stub READ_FLASH transfer in progress
        self._data_blocks = 0  # FLASH_DATA blocks received since reset (drop-bytes fault)

    # -- framing -----------------------------------------------------------------------------------

    def feed(self, data: bytes) -> bytes:
        out = bytearray()
        for frame in self._decoder.feed(data):
            out += self._handle_frame(frame)
        return bytes(out)

    def _handle_frame(self, frame: bytes) -> bytes:
        if self._read is not None and len(frame) == 4:
            return self._read_ack(frame)
        if len(frame) < 8 or frame[0] != 0x00:
            return b""  # not a request: the ROM ignores it
        op, length, chk = struct.unpack_from("<BHI", frame, 1)
        data = frame[8:]
        if self.fault == "drop-bytes" and op in (FLASH_DATA, FLASH_DEFL_DATA):
            data = self._drop_bytes(data)
        if len(data) != length:
            return self._error(op, ROM_INVALID_MESSAGE if not self.stub else STUB_BAD_DATA_LEN)
        if op == SYNC:
            return self._sync(data)
        handler = self._handlers().get(op)
        if handler is None:
            return self._error(op, ROM_INVALID_MESSAGE if not self.stub else STUB_INVALID_COMMAND)
        try:
            value, payload, after = handler(data, chk)
        except CommandError as exc:
            return self._error(op, exc.code)
        except (ValueError, struct.error):  # parameters outside the flash or malformed
            return self._error(op, ROM_FAILED_TO_ACT if not self.stub else STUB_BAD_DATA_LEN)
        reply = self._reply(op, value, payload)
        if after is not None:
            reply += after()
        return reply

    def _reply(self, op: int, value: int = 0, payload: bytes = b"", status: int = 0, error: int = 0) -> bytes:
        status_bytes = bytes([status, error]) if self.stub else bytes([status, error, 0, 0])
        body = payload + status_bytes
        return slip_encode(struct.pack("<BBHI", 1, op, len(body), value) + body)

    def _error(self, op: int, code: int) -> bytes:
        return self._reply(op, 0, b"", 1, code)

    def _handlers(self) -> dict[int, Callable]:
        common = {
            READ_REG: self._read_reg,
            WRITE_REG: self._write_reg,
            SPI_ATTACH: self._ok,
            SPI_SET_PARAMS: self._spi_set_params,
            FLASH_BEGIN: self._flash_begin,
            FLASH_DATA: self._flash_data,
            FLASH_END: self._flash_end,
            FLASH_DEFL_BEGIN: self._flash_defl_begin,
            FLASH_DEFL_DATA: self._flash_defl_data,
            FLASH_DEFL_END: self._flash_end,
            SPI_FLASH_MD5: self._md5,
            CHANGE_BAUDRATE: self._ok,
        }
        if self.chip.security_info:
            common[GET_SECURITY_INFO] = self._security_info
        if self.stub:
            common.update({ERASE_FLASH: self._erase_flash, ERASE_REGION: self._erase_region, READ_FLASH: self._read_flash})
        else:
            common.update(
                {
                    MEM_BEGIN: self._mem_begin,
                    MEM_DATA: self._mem_data,
                    MEM_END: self._mem_end,
                    READ_FLASH_SLOW: self._read_flash_slow,
                }
            )
        return common

    # -- commands ---------------------------------------------------------------------------------

    def _sync(self, data: bytes) -> bytes:
        if data != b"\x07\x07\x12\x20" + b"\x55" * 32:
            return self._error(SYNC, ROM_INVALID_MESSAGE)
        if self.fault == "no-sync":
            return b""  # the chip hears the host but its TX line is dead
        # the ROM answers a SYNC eight times with a non-zero value; the stub answers with 0
        value = 0 if self.stub else 0x20120707
        return self._reply(SYNC, value) * (1 if self.stub else 8)

    @staticmethod
    def _ok(data: bytes, chk: int):
        return 0, b"", None

    def _read_reg(self, data: bytes, chk: int):
        if len(data) != 4:
            raise CommandError(ROM_INVALID_MESSAGE)
        (addr,) = struct.unpack("<I", data)
        return self._register(addr), b"", None

    def _register(self, addr: int) -> int:
        if addr == self.chip.uart_clkdiv_reg:
            # the ROM auto-bauds: the divider is APB (40 MHz crystal) / the host's baud rate
            return round(40_000_000 / max(1, self._baudrate()))
        return self.registers.get(addr, 0)

    def _write_reg(self, data: bytes, chk: int):
        if len(data) == 0 or len(data) % 16:
            raise CommandError(ROM_INVALID_MESSAGE)
        for pos in range(0, len(data), 16):
            addr, value, mask, _delay_us = struct.unpack_from("<IIII", data, pos)
            old = self.registers.get(addr, 0)
            self.registers[addr] = (old & ~mask) | (value & mask)
            if addr == self.chip.spi_reg_base and value & SPI_CMD_USR:
                self._run_spi_command()
        return 0, b"", None

    def _run_spi_command(self) -> None:
        base = self.chip.spi_reg_base
        command = self.registers.get(base + self.chip.spi_usr2_offs, 0) & 0xFF
        w0 = base + self.chip.spi_w0_offs
        if command == SPIFLASH_RDID:
            self.registers[w0] = FLASH_ID_4MB
        elif command == SPIFLASH_RDSFDP:
            self.registers[w0] = 0x50444653  # "SFDP" signature: a JEDEC SPI NOR answers it
        else:
            self.registers[w0] = 0  # status registers: not busy, no protection bits
        self.registers[base] = self.registers.get(base, 0) & ~SPI_CMD_USR  # command done

    def _security_info(self, data: bytes, chk: int):
        # flags, flash_crypt_cnt, 7 key purposes, chip id, API version (loader.py get_security_info)
        payload = struct.pack("<IBBBBBBBBII", 0, 0, 0, 0, 0, 0, 0, 0, 0, self.chip.image_chip_id, 0)
        return 0, payload, None

    def _spi_set_params(self, data: bytes, chk: int):
        if len(data) != 24:
            raise CommandError(ROM_INVALID_MESSAGE)
        _fl_id, total_size, _block, _sector, _page, _mask = struct.unpack("<IIIIII", data)
        self.flash_size = total_size
        return 0, b"", None

    def _bad_len(self) -> int:
        return STUB_BAD_DATA_LEN if self.stub else ROM_INVALID_MESSAGE

    def _flash_begin(self, data: bytes, chk: int, compressed: bool = False):
        if len(data) not in (16, 20):
            raise CommandError(self._bad_len())
        if len(data) == 20 and not self.stub and self.chip.flash_begin_words == 4:
            raise CommandError(ROM_INVALID_MESSAGE)  # ESP32 ROM takes no "encrypted" word
        size, blocks, block_size, offset = struct.unpack_from("<IIII", data)
        if offset + size > self.flash.size:
            raise CommandError(ROM_FAILED_TO_ACT if not self.stub else STUB_TOO_MUCH_DATA)
        if not compressed or not self.stub:
            self.flash.erase(offset, size)  # the ROM erases the whole region up front
        self._write = {
            "offset": offset,
            "size": size,
            "blocks": blocks,
            "block_size": block_size,
            "seq": 0,
            "pos": offset,
            "compressed": compressed,
            "inflate": zlib.decompressobj() if compressed else None,
            "erased_to": offset + size if (not compressed or not self.stub) else offset,
        }
        return 0, b"", None

    def _flash_defl_begin(self, data: bytes, chk: int):
        return self._flash_begin(data, chk, compressed=True)

    def _block(self, data: bytes, chk: int, compressed: bool) -> bytes:
        session = self._write
        if session is None or session["compressed"] != compressed:
            raise CommandError(STUB_NOT_IN_FLASH_MODE if self.stub else ROM_FAILED_TO_ACT)
        if len(data) < 16:
            raise CommandError(self._bad_len())
        size, seq, _, _ = struct.unpack_from("<IIII", data)
        payload = data[16:]
        if size != len(payload):
            raise CommandError(self._bad_len())
        if checksum(payload) != chk & 0xFF:
            raise CommandError(STUB_BAD_DATA_CHECKSUM if self.stub else ROM_INVALID_CRC)
        if seq != session["seq"]:
            raise CommandError(ROM_FAILED_TO_ACT if not self.stub else STUB_BAD_BLOCKSIZE)
        session["seq"] += 1
        return payload

    def _flash_data(self, data: bytes, chk: int):
        payload = self._block(data, chk, compressed=False)
        session = self._write
        self._program(session, payload)
        self._data_blocks += 1
        return 0, b"", None

    def _flash_defl_data(self, data: bytes, chk: int):
        payload = self._block(data, chk, compressed=True)
        session = self._write
        try:
            plain = session["inflate"].decompress(payload)
        except zlib.error:
            raise CommandError(STUB_INFLATE_ERROR if self.stub else ROM_DEFLATE_ERROR) from None
        self._program(session, plain)
        self._data_blocks += 1
        return 0, b"", None

    def _program(self, session: dict, data: bytes) -> None:
        pos = session["pos"]
        end = min(pos + len(data), self.flash.size)
        data = data[: end - pos]
        if end > session["erased_to"]:
            # the stub erases sector by sector as the data arrives
            self.flash.erase(session["erased_to"], end - session["erased_to"])
            session["erased_to"] = -(-end // SECTOR_SIZE) * SECTOR_SIZE
        if self.fault == "bad-verify" and len(data) > 16:
            # a weak cell: one bit of every block fails to program (reads back as erased)
            data = data[:16] + bytes([data[16] | 0x01]) + data[17:]
        self.flash.program(pos, data)
        session["pos"] = end

    def _drop_bytes(self, data: bytes) -> bytes:
        # a flaky cable: from the third data block on, one byte in the middle of each is lost
        if self._data_blocks >= 2 and len(data) > 32:
            middle = len(data) // 2
            return data[:middle] + data[middle + 1 :]
        return data

    def _flash_end(self, data: bytes, chk: int):
        if len(data) != 4:
            raise CommandError(self._bad_len())
        (stay,) = struct.unpack("<I", data)
        self._write = None
        if stay:
            if self.stub:
                return 0, b"", None  # the stub keeps running
            return 0, b"", self._run_app  # ROM: "run user code"
        # reboot: the stub hands back to the ROM loader; the ROM resets (strapping stays latched)
        return 0, b"", self._reboot_to_rom

    def _run_app(self) -> bytes:
        if self.on_run_app is not None:
            self.on_run_app()
        return b""

    def _reboot_to_rom(self) -> bytes:
        self.reset()
        return b""

    def _md5(self, data: bytes, chk: int):
        if len(data) != 16:
            raise CommandError(self._bad_len())
        addr, size, _, _ = struct.unpack("<IIII", data)
        if addr + size > self.flash.size:
            raise CommandError(ROM_FLASH_READ_ERROR)
        digest = self.flash.md5(addr, size)
        return 0, (digest if self.stub else digest.hex().encode()), None

    def _read_flash_slow(self, data: bytes, chk: int):
        if len(data) != 8:
            raise CommandError(ROM_INVALID_MESSAGE)
        offset, length = struct.unpack("<II", data)
        if length > 64:
            raise CommandError(ROM_READ_LENGTH_ERROR)
        if offset + length > self.flash.size:
            raise CommandError(ROM_FLASH_READ_ERROR)
        block = self.flash.read(offset, length)
        return 0, block + b"\x00" * (64 - length), None  # the ROM always returns 64 bytes

    def _mem_begin(self, data: bytes, chk: int):
        if len(data) != 16:
            raise CommandError(ROM_INVALID_MESSAGE)
        size, blocks, block_size, offset = struct.unpack("<IIII", data)
        self._mem = {"size": size, "blocks": blocks, "block_size": block_size, "offset": offset, "seq": 0, "got": 0}
        return 0, b"", None

    def _mem_data(self, data: bytes, chk: int):
        if self._mem is None or len(data) < 16:
            raise CommandError(ROM_FAILED_TO_ACT)
        size, seq, _, _ = struct.unpack_from("<IIII", data)
        payload = data[16:]
        if size != len(payload):
            raise CommandError(ROM_INVALID_MESSAGE)
        if checksum(payload) != chk & 0xFF:
            raise CommandError(ROM_INVALID_CRC)
        if seq != self._mem["seq"]:
            raise CommandError(ROM_FAILED_TO_ACT)
        self._mem["seq"] += 1
        self._mem["got"] += size
        return 0, b"", None

    def _mem_end(self, data: bytes, chk: int):
        if len(data) != 8:
            raise CommandError(ROM_INVALID_MESSAGE)
        no_entry, entry = struct.unpack("<II", data)
        if no_entry or entry == 0:
            return 0, b"", None
        return 0, b"", self._start_stub

    def _start_stub(self) -> bytes:
        # the uploaded code runs: esptool's flasher stub greets with "OHAI" (stub_flasher.c)
        self.stub = True
        self._mem = None
        self._decoder.reset()
        return slip_encode(b"OHAI")

    # -- stub-only commands ---------------------------------------------------------------------

    def _erase_flash(self, data: bytes, chk: int):
        self.flash.erase(0, self.flash.size)
        return 0, b"", None

    def _erase_region(self, data: bytes, chk: int):
        if len(data) != 8:
            raise CommandError(STUB_BAD_DATA_LEN)
        offset, size = struct.unpack("<II", data)
        if offset % SECTOR_SIZE or size % SECTOR_SIZE or offset + size > self.flash.size:
            raise CommandError(STUB_BAD_DATA_LEN)
        self.flash.erase(offset, size)
        return 0, b"", None

    def _read_flash(self, data: bytes, chk: int):
        if len(data) != 16:
            raise CommandError(STUB_BAD_DATA_LEN)
        offset, length, packet, inflight = struct.unpack("<IIII", data)
        if offset + length > self.flash.size or packet == 0:
            raise CommandError(STUB_BAD_DATA_LEN)
        self._read = {
            "offset": offset,
            "length": length,
            "packet": packet,
            "inflight": max(1, inflight),
            "sent": 0,
            "acked": 0,
            "md5": hashlib.md5(),
        }
        return 0, b"", self._read_pump

    def _read_pump(self) -> bytes:
        """Send data packets while fewer than `inflight` are unacknowledged (stub read_flash)."""
        job = self._read
        out = bytearray()
        while job["sent"] < job["length"] and job["sent"] - job["acked"] < job["inflight"] * job["packet"]:
            n = min(job["packet"], job["length"] - job["sent"])
            block = self.flash.read(job["offset"] + job["sent"], n)
            job["md5"].update(block)
            job["sent"] += n
            out += slip_encode(block)
        return bytes(out)

    def _read_ack(self, frame: bytes) -> bytes:
        job = self._read
        (job["acked"],) = struct.unpack("<I", frame)
        if job["acked"] >= job["length"]:
            self._read = None
            return slip_encode(job["md5"].digest())
        return self._read_pump()
